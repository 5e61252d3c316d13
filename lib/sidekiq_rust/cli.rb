# frozen_string_literal: true

require_relative "../sidekiq_rust"
require_relative "cli/command"
require_relative "cli/app_configuration"
require_relative "cli/exec"
require_relative "cli/doctor"
require_relative "cli/systemd"
require_relative "cli/kubernetes_manifest"
require_relative "cli/kubernetes"
require_relative "cli/top"
require_relative "cli/metrics"
require_relative "cli/report"

module SidekiqRust
  # `sidekiq_rust COMMAND [options]` (exe/sidekiq_rust): finds the subcommand and runs it.
  #
  # One class per subcommand in lib/sidekiq_rust/cli/, each with SUMMARY (its line in the command list),
  # `initialize(out:, err:, env:)` and `run(argv)` returning the exit status. Every subcommand takes `--help`
  # and exits 0 when fine, 1 when it found problems, 2 on a usage error.
  class CLI
    EXIT_OK = 0
    EXIT_PROBLEMS = 1
    EXIT_USAGE = 2

    # A command line that cannot be used; the subcommand prints the message and its usage, and exits 2.
    class UsageError < SidekiqRust::Error; end

    COMMANDS = {
      "doctor" => Doctor,
      "exec" => Exec,
      "kubernetes" => Kubernetes,
      "metrics" => Metrics,
      "report" => Report,
      "systemd" => Systemd,
      "top" => Top
    }.freeze

    def initialize(out: $stdout, err: $stderr, env: ENV)
      @out = out
      @err = err
      @env = env
    end

    def run(argv)
      name = argv.first
      case name
      when "-h", "--help", "help"
        @out.puts(usage)
        EXIT_OK
      when "--version"
        @out.puts(VERSION)
        EXIT_OK
      when nil
        @err.puts(usage)
        EXIT_USAGE
      else
        run_command(name, argv.drop(1))
      end
    end

    def usage
      commands = COMMANDS.map do |name, command|
        format("  %-10<name>s %<summary>s", name: name, summary: command::SUMMARY)
      end
      <<~TEXT
        Usage: sidekiq_rust COMMAND [options]

        Commands:
        #{commands.join("\n")}

        `sidekiq_rust COMMAND --help` describes a command.
        Exit status: 0 fine, 1 problems found, 2 usage error.
      TEXT
    end

    private

    def run_command(name, argv)
      command = COMMANDS[name]
      return command.new(out: @out, err: @err, env: @env).run(argv) if command

      @err.puts("sidekiq_rust: unknown command #{name.inspect} (known: #{COMMANDS.keys.join(', ')})")
      @err.puts(usage)
      EXIT_USAGE
    end
  end
end
