# frozen_string_literal: true

require "optparse"
require "yaml"

module SidekiqRust
  class CLI
    # `sidekiq_rust kubernetes [options]`: prints a Deployment for Sidekiq whose memory limit, grace period and
    # preStop agree with Sidekiq's -t and the guard's settings. Loaded by lib/sidekiq_rust/cli.rb.
    class Kubernetes < Command
      NAME = "kubernetes"
      SUMMARY = "print a Kubernetes Deployment (memory limit, grace period and preStop consistent with the guard)"

      HELP = <<~TEXT
        Usage: sidekiq_rust kubernetes [options] > k8s/sidekiq.yaml

        Prints a Deployment of Sidekiq pods, one process per container:
          resources.limits.memory        the container's limit (--memory); the guard's max_rss / hard_max_rss
                                         are checked to be below it
          env                            SIDEKIQ_MAX_RSS and SIDEKIQ_HARD_MAX_RSS (what the generated initializer
                                         reads) when set here, so that the pods run with the limits checked
          terminationGracePeriodSeconds  the preStop's wait + Sidekiq's timeout + 15 s, and never shorter than the
                                         guard's kill_after + 5 s
          preStop                        quiets Sidekiq (TSTP to PID 1) and waits the guard's shutdown_wait, so that
                                         running jobs finish before Kubernetes sends TERM
          command                        `bundle exec sidekiq_rust exec -- sidekiq ...`: each step execs the next, so
                                         Sidekiq is the container's PID 1 and runs under the gem's bundled jemalloc
                                         (--no-jemalloc: plain `bundle exec sidekiq`)
        Without a supervisor in the container, the guard's restart is a clean exit (status 0) and the kubelet starts
        the container again in the same pod (restartPolicy Always).

        The guard's settings: the command line's, else the app's (-r ./config/environment: its SidekiqRust.configure,
        as it resolves in this environment), else what the generated initializer sets in a container
        (SIDEKIQ_MAX_RSS, else "80%"; SIDEKIQ_HARD_MAX_RSS, else :auto: 1.5 x max_rss, at most 90% of the
        limit). The header says which, and where each came from.

        Options:
              --name NAME            the Deployment's name and label (default: sidekiq)
              --image IMAGE          the app's image (default: your-app-image:latest)
              --replicas N           pods (default: 2; with 1, require_other_process = false: see the comments)
              --memory SIZE          resources.limits.memory, e.g. 1Gi, 1536Mi, 2GB (default: 1Gi)
              --cpu CPU              resources.requests.cpu (default: 500m)
          -C, --config FILE          Sidekiq's configuration file, passed on to sidekiq (default: config/sidekiq.yml,
                                     which sidekiq reads itself)
          -t, --timeout N            Sidekiq's shutdown timeout, -t (default: the file's for RAILS_ENV/APP_ENV/
                                     RACK_ENV, production when unset, else 25)
          -r, --require FILE         load FILE first (e.g. ./config/environment), to take the guard's settings from
                                     the app's SidekiqRust.configure (repeatable)
              --max-rss SIZE         the guard's max_rss (default: the app's, else SIDEKIQ_MAX_RSS, else "80%")
              --hard-max-rss SIZE    the guard's hard_max_rss (default: the app's, else SIDEKIQ_HARD_MAX_RSS, else
                                     none)
              --shutdown-wait N      the guard's shutdown_wait, seconds (default: the app's, else 60)
              --kill-after N         the guard's kill_after, above the timeout (default: the app's, else timeout + 15)
              --no-jemalloc          run plain `bundle exec sidekiq`
          -h, --help                 show this help

        Exit status: 0 printed, 1 Sidekiq's configuration file cannot be read, 2 usage error (inconsistent settings).
      TEXT

      Options = Struct.new(:help, :name, :image, :replicas, :memory, :cpu, :config_file, :timeout, :requires,
                           :max_rss, :hard_max_rss, :shutdown_wait, :kill_after, :jemalloc, :app, :given,
                           keyword_init: true)

      DEFAULT_TIMEOUT = 25
      DEFAULT_MEMORY = "1Gi"
      # The generated initializer's max_rss in a container when SIDEKIQ_MAX_RSS is unset.
      CONTAINER_MAX_RSS = "80%"
      # Kubernetes quantities (binary and decimal) and the units the guard's settings take.
      QUANTITY = /\A(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T|KB|MB|GB|TB)?\z/i
      BINARY = { "k" => 1024, "m" => 1024**2, "g" => 1024**3, "t" => 1024**4 }.freeze
      MIB = KubernetesManifest::MIB

      def execute(options)
        @out.print(KubernetesManifest.new(options).text)
        EXIT_OK
      end

      def parse(argv)
        options = Options.new(help: false, name: "sidekiq", image: "your-app-image:latest", replicas: 2,
                              memory: quantity(DEFAULT_MEMORY), cpu: "500m", requires: [], jemalloc: true,
                              given: [])
        parser = OptionParser.new
        parser.on("-h", "--help") { options.help = true }
        parser.on("--name NAME") { |v| options.name = dns_name(v) }
        parser.on("--image IMAGE") { |v| options.image = v }
        parser.on("--replicas N", Integer) { |v| options.replicas = positive(v, "--replicas") }
        parser.on("--memory SIZE") { |v| options.memory = quantity(v) }
        parser.on("--cpu CPU") { |v| options.cpu = v }
        parser.on("-C", "--config FILE") { |v| options.config_file = v }
        parser.on("-t", "--timeout N", Integer) { |v| options.timeout = positive(v, "--timeout") }
        parser.on("-r", "--require FILE") { |v| options.requires << v }
        parser.on("--max-rss SIZE") do |v|
          options.max_rss = v
          options.given << "--max-rss"
        end
        parser.on("--hard-max-rss SIZE") do |v|
          options.hard_max_rss = v
          options.given << "--hard-max-rss"
        end
        parser.on("--shutdown-wait N", Float) { |v| options.shutdown_wait = v }
        parser.on("--kill-after N", Float) { |v| options.kill_after = positive(v, "--kill-after") }
        parser.on("--[no-]jemalloc") { |v| options.jemalloc = v }
        parse_all(parser, argv)
        complete(options) unless options.help
        options
      end

      private

      # Fills what the command line did not give: the file's timeout, the app's guard settings (with -r), else what
      # the generated initializer sets in a container; then checks that they agree. Never a hard_max_rss of its own.
      def complete(options)
        options.timeout ||= file_timeout(options) || DEFAULT_TIMEOUT
        options.app = AppConfiguration.new(options.requires, @env)
        if (app = options.app.configuration)
          options.max_rss ||= app.max_rss ||
                              raise(UsageError, "#{options.app.source} sets no max_rss: set it (the generated " \
                                                "initializer reads SIDEKIQ_MAX_RSS), or give --max-rss")
          options.hard_max_rss ||= app.hard_max_rss
        else
          options.max_rss ||= options.app.variables.fetch("SIDEKIQ_MAX_RSS", CONTAINER_MAX_RSS)
          options.hard_max_rss ||= options.app.variables.fetch("SIDEKIQ_HARD_MAX_RSS", Configuration.new.hard_max_rss)
        end
        options.shutdown_wait ||= app&.shutdown_wait || Configuration.new.shutdown_wait
        options.kill_after = Configuration.kill_after(options.kill_after || app&.kill_after, options.timeout)
        check(options)
      end

      def check(options)
        unless options.kill_after > options.timeout
          raise UsageError, "--kill-after (#{Units.seconds(options.kill_after)}) must exceed --timeout " \
                            "(#{options.timeout}): " \
                            "the guard would KILL Sidekiq before it pushes unfinished jobs back"
        end
        raise UsageError, "--shutdown-wait takes a number of seconds >= 0" if options.shutdown_wait.negative?

        settings = resolve_limits(options)
        [[:max_rss, settings.max_rss], [:hard_max_rss, settings.hard_max_rss]].each do |key, bytes|
          next if bytes.nil? || bytes < options.memory

          raise UsageError, "#{key} (#{Units.mb(bytes)}, #{origin(options, key)}) must be below --memory " \
                            "(#{Units.mb(options.memory)}): the kernel would OOM-kill the container before the " \
                            "guard restarts it; give a larger --memory, or a lower #{key} (e.g. a share: \"80%\")"
        end
      end

      # Where a limit came from, for the refusal: "from the app's configuration (-r ./config/environment)".
      def origin(options, key)
        flag = "--#{key.to_s.tr('_', '-')}"
        return "from #{flag}" if options.given.include?(flag)
        return "from #{options.app.source}" if options.app.given?

        variable = "SIDEKIQ_#{key.upcase}"
        options.app.variables.key?(variable) ? "from #{variable}" : "the generated initializer's default"
      end

      # The guard's limits as it would resolve them in a container of --memory.
      def resolve_limits(options)
        config = Configuration.new
        config.max_rss = options.max_rss
        config.hard_max_rss = options.hard_max_rss
        config.resolve(cgroup: { usage: 0, limit: options.memory })
      rescue ConfigurationError => e
        raise UsageError, e.message
      end

      def file_timeout(options)
        missing = options.config_file && !File.exist?(options.config_file)
        raise UsageError, "--config #{options.config_file}: no such file" if missing

        path = options.config_file || SidekiqConfigFile.find
        return nil unless path

        given = @env.to_h.slice("APP_ENV", "RAILS_ENV", "RACK_ENV")
        environment = given.empty? ? "production" : SidekiqConfigFile.environment(given)
        timeout = SidekiqConfigFile.read(path, environment: environment)[:timeout]
        timeout && Float(timeout).ceil
      rescue ArgumentError, TypeError
        raise ConfigurationError, "#{path}: timeout is #{timeout.inspect}; expected a number of seconds"
      end

      # Bytes of a Kubernetes quantity or a size with a unit ("1Gi", "512Mi", "2GB"; a bare number is MB).
      def quantity(text)
        m = text.to_s.strip.match(QUANTITY)
        raise UsageError, "--memory takes a size like 1Gi, 1536Mi or 2GB, got #{text.inspect}" unless m

        unit = m[2].to_s.downcase
        return (Float(m[1]) * MIB).round if unit.empty?

        (Float(m[1]) * BINARY.fetch(unit[0])).round
      end

      def dns_name(name)
        return name if name.match?(/\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\z/)

        raise UsageError, "--name takes a DNS label (lower-case letters, digits and -), got #{name.inspect}"
      end
    end
  end
end
