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
        {
          "name" => @options.name, "image" => @options.image, "command" => command,
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

      def header
        settings = "max_rss #{@options.max_rss.inspect}, hard_max_rss #{@options.hard_max_rss.inspect}, " \
                   "shutdown_wait #{Units.seconds(@options.shutdown_wait)}, kill_after #{Units.seconds(@options.kill_after)}"
        other = if @options.replicas == 1
                  "# replicas 1: set require_other_process = false, or the sole process restarts only at the hard\n" \
                    "# limit (the queue waits a few seconds while it restarts)."
                else
                  "# require_other_process counts the fleet's live Sidekiq processes in Redis, every pod's: a soft-\n" \
                    "# limit restart waits until another process serves: with one process per pod, another pod's."
                end
        <<~TEXT
          # Sidekiq under sidekiq_rust (`sidekiq_rust kubernetes`). The guard's settings this assumes, to keep in
          # SidekiqRust.configure: #{settings}.
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
