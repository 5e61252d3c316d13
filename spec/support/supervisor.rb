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

  # [serving, restarting], each process's log read once. Serving: alive, started, not quiet for a restart.
  # Restarting: alive, quiet for a restart and still holding its slot (the guard logs when it gives the slot back,
  # at exit). Only the supervisor's thread reaps (SidekiqProcess#alive?): called from `run`.
  def census
    serving = 0
    restarting = 0
    processes.each do |p|
      next unless p.alive?

      log = p.log
      if !log.include?("restarting: quiet")
        serving += 1
      elsif !log.include?("restart slot given back")
        restarting += 1
      end
    end
    [serving, restarting]
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
      serving, restarting = census
      @lock.synchronize do
        @samples << serving
        @max_restarting = [@max_restarting, restarting].max
      end
      sleep SAMPLE
    end
  rescue StandardError => e
    warn "supervisor: #{e.class}: #{e.message}"
    raise
  end
end
