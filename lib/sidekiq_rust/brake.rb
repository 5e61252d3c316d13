# frozen_string_literal: true

module SidekiqRust
  # The memory brake's gate, between Sidekiq's processor threads and the fetcher (BrakeFetch): a processor may
  # fetch only while fewer threads than the policy's window (Native::Guard#window) hold a permit. A thread holds
  # its permit from before its fetch until it asks for the next job (its job is over then), so that the window
  # counts the jobs running plus the fetches under way; a thread left out waits up to WAIT seconds and gets no
  # job, and Sidekiq's processor asks again (quiet and stop are seen within WAIT). The pause happens before the
  # pop: a job is never fetched and then held back.
  #
  # It also says what the brake does: a pause and a resume are logged once each, go to the history (the Memory
  # tab's paused spans, the metrics), and mark this process in Redis as paused, so that a process that pauses
  # while every other one is paused too says so, loudly (once a minute at most).
  class Brake
    # Seconds a thread left out waits for the window before it gets no job.
    WAIT = 1.0
    # Seconds a thread whose job admission held waits for a running job to end (or the monitor's next reading)
    # before it fetches again.
    HELD_WAIT = 5.0
    PAUSED_PREFIX = Keys::PAUSED
    # A fleet paused all at once is said at most this often (seconds) by each process.
    FLEET_PAUSED_EVERY = 60
    # Why the brake fetches again, by the policy's action.
    RESUMED = {
      resume: "below resume_at",
      resume_idle: "the running jobs finished and a reclaim brought memory below brake_at; the brake stays on",
      resume_retained: "no job runs and the pause cannot help: memory pressure that is not this process's to " \
                       "relieve, or memory retained where no restart can be had (dry run, or an embedded Sidekiq " \
                       "without its instance); the brake lets go until memory is below resume_at again"
    }.freeze

    def initialize(native, settings:, log:, history:, adapter:, tag:, concurrency:)
      @native = native
      @settings = settings
      @log = log
      @history = history
      @adapter = adapter
      @tag = tag
      @concurrency = concurrency
      @fleet_paused_said = nil
      @mark_notice = log.notice(failure: "could not mark this process paused in Redis (the other processes take it " \
                                         "for fetching, so a fleet paused all at once may go unsaid)",
                                recovery: "this process's paused mark is written to Redis again")
      @holders = {}
      @lock = Mutex.new
      # Signalled when a permit goes back or the window moves (threads waiting to fetch look again).
      @changed = ConditionVariable.new
      # Signalled only when room may have come (a job ended, memory was read, a reclaim ran, the policy moved):
      # not when a permit goes back, else threads admission held would wake each other and fetch the held job
      # again and again (a busy loop on Redis).
      @room = ConditionVariable.new
      @wakes = 0
    end

    # Called by BrakeFetch before each fetch, in the processor's thread: true when it may fetch.
    def admit(thread = Thread.current)
      deadline = Clock.now + WAIT
      @lock.synchronize do
        @holders.delete(thread)
        @holders.delete_if { |t, _| !t.alive? }
        until @holders.size < @native.window
          remaining = deadline - Clock.now
          return false unless remaining.positive?

          @changed.wait(@lock, remaining)
        end
        @holders[thread] = true
      end
      true
    end

    # The fetch that `admit` let through found no job: the permit goes back.
    def release(thread = Thread.current)
      @lock.synchronize do
        @holders.delete(thread)
        @changed.broadcast
      end
    end

    # Where the wake-ups are: taken before admission looks at a fetched job, so that a job that ends between the
    # hold and #wait_for_room is not missed.
    def room_mark
      @lock.synchronize { @wakes }
    end

    # After admission held this thread's job (back in its queue): waits until a running job ends or the monitor
    # reads memory again (#wake) after `mark` (#room_mark), at most HELD_WAIT seconds.
    def wait_for_room(mark)
      @lock.synchronize { @room.wait(@lock, HELD_WAIT) if @wakes == mark }
    end

    # A job ended, or memory was read: threads waiting for the window or for room look again.
    def wake
      @lock.synchronize do
        @wakes += 1
        @changed.broadcast
        @room.broadcast
      end
    end

    # Threads holding a permit (running a job or fetching).
    def holders
      @lock.synchronize { @holders.size }
    end

    # The policy changed the window (:pause, :resume, :resume_idle, :resume_retained, :widen): threads waiting
    # look again, and a pause or a resume is told (in a thread of its own: it writes to Redis). Never raises.
    def apply(action)
      wake
      return if action == :widen

      memory = @native.last_memory
      Thread.new { announce(action, memory) }
    end

    # Refreshes this process's paused mark while the brake holds (the monitor calls it). Never raises.
    def refresh
      mark(true) if @native.paused?
    end

    # {paused:, seconds:} for the history.
    def state
      { paused: @native.paused?, seconds: @native.paused_seconds }
    end

    private

    def announce(action, memory)
      if action == :pause
        paused(memory)
      else
        resumed(action, memory)
      end
    rescue StandardError => e
      @log.failure("telling the brake's #{action}", e)
    end

    def paused(memory)
      mark(true)
      limits = @native.limits
      @log.warn("brake: paused fetching (at #{Units.mb(memory)}, brake_at #{Units.mb(limits[:brake_at])}" \
                "#{pressure_text}); " \
                "#{@native.busy} running job(s) finish, then reclaim; fetching again below resume_at " \
                "#{Units.mb(limits[:resume_at])}", memory: memory)
      @history.event(:pause, memory: memory, busy: @native.busy)
      return if @fleet_paused_said && Clock.now - @fleet_paused_said < FLEET_PAUSED_EVERY
      return unless fleet_paused?

      @fleet_paused_said = Clock.now
      @log.error("brake: every live process of the fleet is paused by its memory brake: queued work waits until " \
                 "their running jobs finish and memory comes back under resume_at. Each is over its brake_at: " \
                 "the jobs running at once need more memory than the processes have (lower concurrency, raise " \
                 "max_rss, or add a process)", memory: memory)
    end

    def resumed(action, memory)
      mark(false)
      how = RESUMED.fetch(action)
      @log.info("brake: fetching again with #{@native.window} of #{@concurrency} " \
                "thread(s), #{how}; paused #{format('%.1f', @native.paused_seconds)}s in all", memory: memory)
      @history.event(:resume, memory: memory, window: @native.window, retained: action == :resume_retained)
    end

    def pressure_text
      return "" unless @native.pressured?

      format("; memory pressure %.1f%% >= brake_pressure %g%%", @native.pressure, @settings.brake_pressure)
    end

    # Whether no other live process fetches: each is quiet, stopping or paused by its brake.
    def fleet_paused?
      others = @adapter.processes.reject { |p| @adapter.tag_of(p) == @tag || p.stopping? }
      return false if others.empty? # a sole process: nothing to compare with (the log above says it paused)

      paused = @adapter.redis { |conn| conn.call("MGET", *others.map { |p| PAUSED_PREFIX + @adapter.tag_of(p) }) }
      paused.all?
    end

    def mark(on)
      key = PAUSED_PREFIX + @tag
      @adapter.redis do |conn|
        on ? conn.call("SET", key, "1", "EX", (3 * @settings.check_interval).ceil) : conn.call("DEL", key)
      end
      @mark_notice.succeeded
    rescue StandardError => e
      @mark_notice.failed(e) # a mark left behind expires by itself
    end
  end
end
