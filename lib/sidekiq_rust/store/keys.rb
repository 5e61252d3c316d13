# frozen_string_literal: true

module SidekiqRust
  # Every Redis key sidekiq_rust writes, with its type and expiry: the one place a key is named. IDENTITY is
  # Sidekiq's own process identity ("hostname:pid:nonce"). Every key expires; none is found by SCAN.
  #
  # | key                                  | type       | expiry                                         | written by  |
  # |--------------------------------------|------------|------------------------------------------------|-------------|
  # | sidekiq_rust:history:IDENTITY        | list       | HISTORY_TTL after the last refresh             | History     |
  # | sidekiq_rust:process:IDENTITY        | hash       | HISTORY_TTL after the last refresh             | History     |
  # | sidekiq_rust:processes               | sorted set | HISTORY_TTL after the last refresh             | History     |
  # | sidekiq_rust:events                  | stream     | EVENTS_TTL, MAXLEN ~ EVENTS_MAX                | History     |
  # | sidekiq_rust:classes:IDENTITY        | string     | an hour after the last write                   | Report      |
  # | sidekiq_rust:class_index             | sorted set | an hour + REFRESH_EVERY after the last refresh | Report      |
  # | sidekiq_rust:restart_slot:N          | string     | shutdown_wait + kill_after + 60                | Fleet       |
  # | sidekiq_rust:memory_restart:HOSTNAME | string     | loop_window                                    | Fleet       |
  # | sidekiq_rust:paused:IDENTITY         | string     | 3 check_intervals                              | Brake       |
  # | sidekiq_rust:restarts_in_flight:JID  | string     | QUARANTINE_TTL (an Integer)                    | Quarantine  |
  # | sidekiq_rust:cgroup_oom:HOST:CGROUP  | string     | HISTORY_TTL (JSON count, at)                   | CgroupWatch |
  # | sidekiq_rust:oom_reported:...        | string     | HISTORY_TTL (SET NX claims)                    | CgroupWatch |
  #
  # A refresh (EXPIRE, the index's trim) comes with the first write of a key and then every REFRESH_EVERY seconds,
  # and at once when a write's reply says it created its key (Redis restarted or flushed), not with every check:
  # see docs/redis.md for the commands per check.
  module Keys
    # History (lib/sidekiq_rust/history.rb): each process's readings, its fields and counters, the index of
    # processes, the fleet's event stream.
    HISTORY_READINGS = "sidekiq_rust:history:"
    HISTORY_PROCESS = "sidekiq_rust:process:"
    HISTORY_INDEX = "sidekiq_rust:processes"
    HISTORY_EVENTS = "sidekiq_rust:events"
    # Every history key expires this long after its last write: a process gone for two hours leaves nothing.
    HISTORY_TTL = 2 * 3600
    # The event stream keeps about this many events (XADD MAXLEN ~), for this long after the last one.
    EVENTS_MAX = 1000
    EVENTS_TTL = 7 * 86_400
    # History and Report refresh their expiries (and trim their indexes) this often, in seconds.
    REFRESH_EVERY = 60

    # Report (lib/sidekiq_rust/attribution/report.rb): each process's per-class figures, and their index.
    CLASSES = "sidekiq_rust:classes:"
    CLASS_INDEX = "sidekiq_rust:class_index"

    # Fleet (lib/sidekiq_rust/fleet.rb): the restart slots, and the mark of a host's memory restart.
    RESTART_SLOT = "sidekiq_rust:restart_slot:"
    MEMORY_RESTART = "sidekiq_rust:memory_restart:"

    # Brake (lib/sidekiq_rust/brake.rb): the mark of a process whose brake holds fetching.
    PAUSED = "sidekiq_rust:paused:"

    # Quarantine (lib/sidekiq_rust/quarantine.rb): per jid, the memory restarts it was in flight at.
    RESTARTS_IN_FLIGHT = "sidekiq_rust:restarts_in_flight:"
    QUARANTINE_TTL = 86_400

    # CgroupWatch (lib/sidekiq_rust/cgroup_watch.rb): the OOM-kill counter a cgroup's processes last saw, and the
    # claims that report each kill once.
    CGROUP_OOM = "sidekiq_rust:cgroup_oom:"
    OOM_REPORTED = "sidekiq_rust:oom_reported:"
  end
end
