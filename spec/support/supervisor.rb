# frozen_string_literal: true

# A supervisor for the end-to-end specs, as systemd's Restart=always or Kubernetes would be: `size` slots, each
# running a real `sidekiq` process (SidekiqProcess) that is started again whenever it exits. Every 0.2 s it
# samples how many processes serve (alive, started, and not quieting: the guard has not logged its restart),
# and it keeps every generation, so that a spec can read all the logs and exit statuses.
class Supervisor
  SAMPLE = 0.2

  attr_reader :generations, :samples, :max_restarting

  # `start` builds and starts a SidekiqProcess for a name (the spec's `sidekiq` helper without the start).
  def initialize(size, prefix: "w", &build)
    @size = size
    @prefix = prefix
    @build = build
    @generations = []
    @samples = []
    @lock = Mutex.new
    @running = false
    @max_restarting = 0
    @empty_moments = []
    @exited_at = {}
  end

  # When the supervisor saw the process gone (monotonic seconds), nil while it runs.
  def exited_at(process)
    @lock.synchronize { @exited_at[process] }
  end

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  def start
    @running = true
    @slots = Array.new(@size) { |i| spawn(i, 1) }
    @thread = Thread.new { run }
    self
  end

  # Stops supervising (the processes are stopped by whoever built them, SidekiqProcess#stop).
  def stop
    @running = false
    @thread&.join(60)
    @starting&.each { |t| t.join(60) }
  end

  def processes
    @lock.synchronize { @generations.dup }
  end

  def min_serving
    @lock.synchronize { @samples.min }
  end

  # What each process was at the first samples where none served (for a failed expectation on min_serving).
  def empty_report
    moments = @lock.synchronize { @empty_moments.dup }
    moments.empty? ? "" : "no process served at #{moments.join(' | ')}"
  end

  # Processes that ended by a signal (KILL) rather than exiting.
  def killed
    processes.select { |p| p.status&.signaled? }
  end

  def logs
    processes.map(&:log).join
  end

  def count(pattern)
    processes.sum { |p| p.log.scan(pattern).size }
  end

  private

  # Each process's state, its log read once: :exited, :serving (alive, started, not quiet for a restart),
  # :restarting (quiet for a restart and still holding its slot: the guard logs when it gives the slot back, at
  # exit) or :stopping (the slot given back). Only the supervisor's thread reaps (SidekiqProcess#alive?): called
  # from `run`.
  def census
    processes.to_h do |p|
      log = p.alive? ? p.log : nil
      state = if log.nil? then :exited
              elsif !log.include?("restarting: quiet") then :serving
              elsif log.include?("restart slot given back") then :stopping
              else :restarting
              end
      [p, state]
    end
  end

  # Keeps what each process was when none served (the first 5 such samples), for the failure message.
  def note_empty(states)
    return if @empty_moments.size >= 5

    listed = states.map { |p, state| "#{p.name} (pid #{p.pid}): #{state}" }.join(", ")
    @empty_moments << "#{Time.now.utc.strftime('%H:%M:%S.%L')}: #{listed}; starting: #{@slots.count(:starting)}"
  end

  # Starts a process (it waits for the guard to start) and only then lists it.
  def spawn(slot, generation)
    process = @build.call("#{@prefix}#{slot + 1}-#{generation}")
    process.start
    @lock.synchronize { @generations << process }
    [process, generation]
  end

  # Samples every SAMPLE seconds; a slot whose process exited is started again in a thread of its own, so that
  # the samples go on while it boots.
  def run
    @starting = []
    while @running
      @slots.each_with_index do |entry, slot|
        next if entry == :starting

        process, generation = entry
        next if process.alive?

        @lock.synchronize { @exited_at[process] = monotonic }
        @slots[slot] = :starting
        @starting << Thread.new { @slots[slot] = spawn(slot, generation + 1) }
      end
      states = census
      serving = states.values.count(:serving)
      @lock.synchronize do
        @samples << serving
        @max_restarting = [@max_restarting, states.values.count(:restarting)].max
        note_empty(states) if serving.zero?
      end
      sleep SAMPLE
    end
  rescue StandardError => e
    warn "supervisor: #{e.class}: #{e.message}"
    raise
  end
end
