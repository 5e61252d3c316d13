# frozen_string_literal: true

require "optparse"

module SidekiqRust
  class CLI
    # `sidekiq_rust systemd [options]`: prints a systemd unit for a Sidekiq process whose stop timeout agrees
    # with Sidekiq's -t and the guard's kill_after. Loaded by lib/sidekiq_rust/cli.rb.
    class Systemd < Command
      NAME = "systemd"
      SUMMARY = "print a systemd unit (Restart=always, consistent TimeoutStopSec)"

      HELP = <<~TEXT
        Usage: sidekiq_rust systemd [options] > /etc/systemd/system/sidekiq.service

        Prints a unit for one Sidekiq process: Restart=always (the guard's graceful restarts rely on it),
        KillSignal=SIGTERM, and a TimeoutStopSec long enough for Sidekiq to push unfinished jobs back
        (max(timeout + 15, kill_after + 5) seconds).

        The guard's settings the app reads from the environment go into Environment= lines: SIDEKIQ_MAX_RSS and
        SIDEKIQ_HARD_MAX_RSS (what the generated initializer reads) when set where this command runs (an
        --environment line of the same name wins). With -r ./config/environment, it takes the guard's kill_after
        from the app and says in a comment which limits the app sets (none assumed where it sets none).

        Options:
              --name NAME              the unit's name in --instances' install comment (default: sidekiq)
              --working-directory DIR  the app's directory (default: the current directory)
              --exec-start COMMAND     the command; /usr/bin/env runs it unless it starts with /
                                       (default: /usr/bin/env bundle exec sidekiq [-C FILE] -t TIMEOUT)
              --user USER              run as USER
          -C, --config FILE            Sidekiq's configuration file, passed on to sidekiq (default: the
                                       working directory's config/sidekiq.yml, which sidekiq reads itself)
          -t, --timeout N              Sidekiq's shutdown timeout, -t, whole seconds (default: the file's
                                       timeout for the unit's RAILS_ENV/APP_ENV/RACK_ENV, else 25)
              --kill-after N           the guard's kill_after, above the timeout (default: the app's, else
                                       timeout + 15)
          -r, --require FILE           load FILE first (e.g. ./config/environment), to take the guard's settings
                                       from the app's SidekiqRust.configure (repeatable)
              --environment KEY=VALUE  an Environment= line, quoted when VALUE has spaces (repeatable)
              --malloc-arena-max N     Environment=MALLOC_ARENA_MAX=N (glibc)
              --jemalloc               run the command through `bundle exec sidekiq_rust exec --`, which
                                       preloads the bundled jemalloc of the installed gem (no path in the
                                       unit to go stale at the next gem upgrade)
              --instances N            a template unit (NAME@.service) for N processes
          -h, --help                   show this help

        Exit status: 0 printed, 1 Sidekiq's configuration file cannot be read, 2 usage error.
      TEXT

      Options = Struct.new(:help, :name, :working_directory, :exec_start, :user, :config_file, :timeout,
                           :kill_after, :environment, :malloc_arena_max, :jemalloc, :instances, :requires, :app,
                           keyword_init: true)

      DEFAULT_TIMEOUT = 25

      def execute(options)
        @out.puts(unit(options))
        EXIT_OK
      end

      def parse(argv)
        options = Options.new(help: false, name: "sidekiq", working_directory: Dir.pwd, environment: [],
                              jemalloc: false, requires: [])
        parser = OptionParser.new
        parser.on("-h", "--help") { options.help = true }
        parser.on("--name NAME") { |v| options.name = unit_name(v) }
        parser.on("--working-directory DIR") { |v| options.working_directory = File.expand_path(v) }
        parser.on("--exec-start COMMAND") { |v| options.exec_start = command(v) }
        parser.on("--user USER") { |v| options.user = v }
        parser.on("-C", "--config FILE") { |v| options.config_file = v }
        parser.on("-t", "--timeout N", Integer) { |v| options.timeout = positive(v, "--timeout") }
        parser.on("--kill-after N", Float) { |v| options.kill_after = positive(v, "--kill-after") }
        parser.on("--environment KEY=VALUE") { |v| options.environment << environment(v) }
        parser.on("--malloc-arena-max N", Integer) { |v| options.malloc_arena_max = positive(v, "--malloc-arena-max") }
        parser.on("--jemalloc") { options.jemalloc = true }
        parser.on("--instances N", Integer) { |v| options.instances = positive(v, "--instances") }
        parser.on("-r", "--require FILE") { |v| options.requires << v }
        parse_all(parser, argv)
        return options if options.help

        options.timeout ||= file_timeout(options) || DEFAULT_TIMEOUT
        options.app = AppConfiguration.new(options.requires, @env)
        options.kill_after ||= options.app.configuration&.kill_after
        check_kill_after(options)
        options
      end

      # The timeout of Sidekiq's configuration file (-C, else the working directory's config/sidekiq.yml), in the
      # section of the unit's environment, as whole seconds (Sidekiq's -t); nil when there is none.
      def file_timeout(options)
        path = options.config_file && File.expand_path(options.config_file, options.working_directory)
        raise UsageError, "--config #{options.config_file}: no such file" if path && !File.exist?(path)

        path ||= SidekiqConfigFile.find(options.working_directory)
        return nil unless path

        timeout = SidekiqConfigFile.read(path, environment: unit_environment(options))[:timeout]
        timeout && Float(timeout).ceil
      rescue ArgumentError, TypeError
        raise ConfigurationError, "#{path}: timeout is #{timeout.inspect}; expected a number of seconds"
      end

      # The environment Sidekiq will run in: the unit's own APP_ENV/RAILS_ENV/RACK_ENV lines, else this shell's.
      def unit_environment(options)
        given = options.environment.to_h { |pair| pair.split("=", 2) }
        SidekiqConfigFile.environment(given.key?("APP_ENV") || given.key?("RAILS_ENV") || given.key?("RACK_ENV") ? given : @env)
      end

      # TimeoutStopSec, whole seconds: Sidekiq's timeout plus the guard's margin, and never shorter than the guard's
      # KILL.
      def timeout_stop_sec(options)
        kill_after = Configuration.kill_after(options.kill_after, options.timeout)
        [options.timeout + Configuration::KILL_AFTER_MARGIN, kill_after + 5].max.ceil
      end

      # The unit's text.
      def unit(options)
        template = !options.instances.nil?
        lines = []
        lines.concat(install_comment(options)) if template
        lines.concat(limits_comment(options.app)) if options.app&.given?
        lines << "[Unit]"
        lines << "Description=Sidekiq#{template ? ' %i' : ''} (memory guard: sidekiq_rust)"
        lines << "After=network.target"
        lines << ""
        lines << "[Service]"
        lines << "Type=simple"
        lines << "WorkingDirectory=#{options.working_directory}"
        lines << "ExecStart=#{exec_start(options)}"
        lines << "User=#{options.user}" if options.user
        environment_lines(options).each { |line| lines << line }
        lines << "Restart=always"
        lines << "RestartSec=1"
        lines << "KillSignal=SIGTERM"
        lines << "TimeoutStopSec=#{timeout_stop_sec(options)}"
        lines << ""
        lines << "[Install]"
        lines << "WantedBy=multi-user.target"
        "#{lines.join("\n")}\n"
      end

      private

      def environment(pair)
        raise UsageError, "--environment takes KEY=VALUE, got #{pair.inspect}" unless pair.match?(/\A[A-Za-z_]\w*=/)

        pair
      end

      # The guard KILLs at kill_after, which must leave Sidekiq its whole timeout (the doctor fails it otherwise).
      def check_kill_after(options)
        return if options.kill_after.nil? || options.kill_after > options.timeout

        raise UsageError, "--kill-after (#{Units.seconds(options.kill_after)}) must exceed --timeout " \
                          "(#{options.timeout}): the guard would KILL Sidekiq before it pushes unfinished jobs back"
      end

      def unit_name(name)
        return name if name.match?(/\A[\w:.-]+\z/)

        raise UsageError, "--name takes a unit name of letters, digits and : _ . -, got #{name.inspect}"
      end

      def command(text)
        raise UsageError, "--exec-start takes a command, got an empty one" if text.strip.empty?

        text.strip
      end

      # One Environment= line: the pair double-quoted when it has spaces, quotes or backslashes (systemd splits
      # on spaces), and % doubled (systemd expands %-specifiers there).
      def environment_line(pair)
        pair = pair.gsub("%", "%%")
        pair = "\"#{pair.gsub(/[\\"]/) { |c| "\\#{c}" }}\"" if pair.match?(/[\s"'\\]/)
        "Environment=#{pair}"
      end

      def exec_start(options)
        command = options.exec_start || default_command(options)
        # The gem's own launcher finds the jemalloc of whatever version is installed when the unit starts.
        command = "bundle exec sidekiq_rust exec -- #{command.delete_prefix('bundle exec ')}" if options.jemalloc
        command.start_with?("/") ? command : "/usr/bin/env #{command}"
      end

      def default_command(options)
        config = options.config_file ? " -C #{options.config_file}" : ""
        "bundle exec sidekiq#{config} -t #{options.timeout}"
      end

      # The given --environment pairs, then the guard's variables set here that they do not name.
      def environment_lines(options)
        given = options.environment.map { |pair| pair.split("=", 2).first }
        variables = options.app ? options.app.variables.reject { |name, _| given.include?(name) } : {}
        pairs = options.environment + variables.map { |name, value| "#{name}=#{value}" }
        lines = pairs.map { |pair| environment_line(pair) }
        if options.jemalloc
          @err.puts("sidekiq_rust systemd: --malloc-arena-max ignored: it tunes glibc, and --jemalloc replaces it") if
            options.malloc_arena_max
        elsif options.malloc_arena_max
          lines << environment_line("MALLOC_ARENA_MAX=#{options.malloc_arena_max}")
        end
        lines
      end

      # Which limits the app sets (none assumed where it sets none), and what a share of a limit needs under systemd.
      def limits_comment(app)
        config = app.configuration
        hard = config.hard_max_rss ? config.hard_max_rss.inspect : "none"
        lines = ["# The guard's limits, from #{app.source}: max_rss #{config.max_rss.inspect}, hard_max_rss #{hard}."]
        if [config.max_rss, config.hard_max_rss].any? { |limit| limit.to_s.end_with?("%") }
          lines << "# A share (\"80%\") is of the unit's memory limit: add MemoryMax=, or the guard will not start."
        end
        lines << ""
      end

      def install_comment(options)
        n = options.instances
        [
          "# Save as /etc/systemd/system/#{options.name}@.service, then start #{n} processes:",
          "#   systemctl daemon-reload && systemctl enable --now #{options.name}@{1..#{n}}",
          ""
        ]
      end
    end
  end
end
