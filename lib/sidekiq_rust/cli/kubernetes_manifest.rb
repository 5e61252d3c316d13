# frozen_string_literal: true

require "yaml"

module SidekiqRust
  class CLI
    # The text `sidekiq_rust kubernetes` prints for its resolved options (CLI::Kubernetes::Options): a comment
    # header saying what the guard's settings must be, then the Deployment.
    class KubernetesManifest
      MIB = 1024**2

      def initialize(options)
        @options = options
      end

      def text
        header + YAML.dump(deployment)
      end

      # The Deployment as a Hash (what the YAML says).
      def deployment
        labels = -> { { "app" => @options.name } } # a copy each: YAML.dump would write anchors for one Hash
        {
          "apiVersion" => "apps/v1", "kind" => "Deployment",
          "metadata" => { "name" => @options.name, "labels" => labels.call },
          "spec" => {
            "replicas" => @options.replicas, "selector" => { "matchLabels" => labels.call },
            "template" => {
              "metadata" => { "labels" => labels.call },
              "spec" => {
                "terminationGracePeriodSeconds" => grace_period,
                "containers" => [container]
              }
            }
          }
        }
      end

      # Seconds: the preStop's wait, then Sidekiq's whole timeout after TERM, and the margin the guard leaves
      # before KILL; never shorter than the guard's own KILL.
      def grace_period
        o = @options
        [o.shutdown_wait + o.timeout + Configuration::KILL_AFTER_MARGIN, o.kill_after + 5].max.ceil
      end

      private

      def container
        memory = "#{(@options.memory / MIB.to_f).ceil}Mi"
        env = variables.empty? ? {} : { "env" => variables.map { |name, value| { "name" => name, "value" => value } } }
        {
          "name" => @options.name, "image" => @options.image, "command" => command, **env,
          "resources" => { "requests" => { "memory" => memory, "cpu" => @options.cpu },
                           "limits" => { "memory" => memory } },
          "lifecycle" => { "preStop" => { "exec" => { "command" => [
            "/bin/sh", "-c", "kill -TSTP 1; sleep #{Units.seconds(@options.shutdown_wait)}"
          ] } } }
        }
      end

      def command
        sidekiq = ["sidekiq", *(@options.config_file ? ["-C", @options.config_file] : []), "-t", @options.timeout.to_s]
        @options.jemalloc ? ["bundle", "exec", "sidekiq_rust", "exec", "--", *sidekiq] : ["bundle", "exec", *sidekiq]
      end

      # What the guard's settings are and where they come from; a hard_max_rss set to nil is said to be none.
      def settings_text
        hard = @options.hard_max_rss ? @options.hard_max_rss.inspect : "none"
        settings = "max_rss #{@options.max_rss.inspect}, hard_max_rss #{hard}, shutdown_wait " \
                   "#{Units.seconds(@options.shutdown_wait)}, kill_after #{Units.seconds(@options.kill_after)}"
        app = @options.app
        source = if app&.given?
                   app.source
                 else
                   "the generated initializer in a container: SIDEKIQ_MAX_RSS, else \"80%\"; SIDEKIQ_HARD_MAX_RSS, " \
                     "else :auto (-r ./config/environment takes the app's own)"
                 end
        given = Array(@options.given)
        source += "; #{given.join(' and ')} from the command line, in the env below" unless given.empty?
        "The guard's settings this assumes: #{settings}. From #{source}."
      end

      # The variables of the guard's settings for the container: those set where the command ran, and the limits
      # given on its command line (the generated initializer reads them).
      def variables
        found = @options.app ? @options.app.variables.dup : {}
        given = Array(@options.given)
        found["SIDEKIQ_MAX_RSS"] = @options.max_rss.to_s if given.include?("--max-rss")
        found["SIDEKIQ_HARD_MAX_RSS"] = @options.hard_max_rss.to_s if given.include?("--hard-max-rss")
        found
      end

      # `text` as comment lines of at most 116 characters.
      def comment(text)
        text.scan(/\S.{0,112}(?=\s|\z)/).map { |line| "# #{line}\n" }.join
      end

      def header
        other = if @options.replicas == 1
                  "# replicas 1: set require_other_process = false, or the sole process restarts only at the hard\n" \
                    "# limit (the queue waits a few seconds while it restarts)."
                else
                  "# require_other_process counts the fleet's live Sidekiq processes in Redis, every pod's: a soft-\n" \
                    "# limit restart waits until another process serves: with one process per pod, another pod's."
                end
        comment("Sidekiq under sidekiq_rust (`sidekiq_rust kubernetes`). #{settings_text}") + <<~TEXT
          # The guard's restart is a clean exit; the kubelet starts the container again in the same pod (its
          # restart back-off applies to clean exits too: a process restarting more often than every 10 minutes
          # waits 10 s, 20 s, 40 s, ...).
          #{other}
          # One Sidekiq process per container: an OOM kill of the cgroup (memory.oom.group, Kubernetes 1.28+) takes
          # every process of the container and, with basic fetch, their jobs in flight.
        TEXT
      end
    end
  end
end
