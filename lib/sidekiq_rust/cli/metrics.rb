# frozen_string_literal: true

require "optparse"

module SidekiqRust
  class CLI
    # `sidekiq_rust metrics [options]`: the fleet's memory metrics in the Prometheus text format, on stdout or into
    # a file for node_exporter's textfile collector. Loaded by lib/sidekiq_rust/cli.rb.
    class Metrics < Command
      NAME = "metrics"
      SUMMARY = "the fleet's memory metrics in the Prometheus text format (node_exporter textfile)"

      HELP = <<~TEXT
        Usage: sidekiq_rust metrics [options]

        Prints what the guards of the fleet wrote to Redis (memory, limits, reclaimed bytes, restarts and refused
        restarts per process, per-class figures) in the Prometheus text format, the same as
        SidekiqRust::Metrics::App serves. For node_exporter's textfile collector, run it from cron or a timer:
          sidekiq_rust metrics --output /var/lib/node_exporter/textfile/sidekiq_rust.prom

        Options:
          -o, --output FILE    write FILE (through a temporary file and a rename, so the collector never reads
                               half a file) instead of printing
              --redis-url URL  the fleet's Redis (default: Sidekiq's configuration / REDIS_URL)
          -h, --help           show this help

        Exit status: 0 fine, 1 Redis cannot be reached or FILE cannot be written, 2 usage error.
      TEXT

      Options = Struct.new(:help, :output, :redis_url, keyword_init: true)

      def execute(options)
        connect(options.redis_url)
        text = SidekiqRust::Metrics.text
        return write_file(options.output, text) if options.output

        @out.print(text)
        EXIT_OK
      rescue StandardError => e
        redis_failure(e)
      end

      def parse(argv)
        options = Options.new(help: false)
        parser = OptionParser.new
        parser.on("-h", "--help") { options.help = true }
        parser.on("-o", "--output FILE") { |v| options.output = v }
        parser.on("--redis-url URL") { |v| options.redis_url = v }
        parse_all(parser, argv)
        options
      end

      private

      # Writes through a temporary file in the same directory and a rename.
      def write_file(path, text)
        tmp = File.join(File.dirname(path), ".#{File.basename(path)}.#{::Process.pid}.tmp")
        File.write(tmp, text)
        File.rename(tmp, path)
        EXIT_OK
      rescue SystemCallError => e
        @err.puts("sidekiq_rust metrics: cannot write #{path} (#{e.message}): check that the directory exists " \
                  "and is writable")
        EXIT_PROBLEMS
      ensure
        File.unlink(tmp) if tmp && File.exist?(tmp)
      end
    end
  end
end
