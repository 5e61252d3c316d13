# frozen_string_literal: true

require "rbconfig"

module SidekiqRust
  class CLI
    # `sidekiq_rust exec [--verbose] [--] COMMAND [ARGS...]`: replaces this process with COMMAND, the bundled
    # jemalloc added to its LD_PRELOAD. `parse` and `plan` decide everything; `execute` only prints and execs.
    # Loaded by lib/sidekiq_rust/cli.rb, which defines the exit statuses and UsageError used here.
    class Exec < Command
      NAME = "exec"
      SUMMARY = "run a command with the bundled jemalloc preloaded (LD_PRELOAD)"

      HELP = <<~TEXT
        Usage: sidekiq_rust exec [--verbose] [--] COMMAND [ARGS...]

        Replaces this process with COMMAND, sidekiq_rust's bundled jemalloc added at the end of LD_PRELOAD
        (entries already there are kept, and stay first). Nothing is added when the command would already run
        jemalloc (LD_PRELOAD names a jemalloc, or this Ruby is linked with -ljemalloc), nor when LD_PRELOAD
        names another allocator (tcmalloc, mimalloc): one process, one allocator.

        The bundled jemalloc reads its run-time options from _RJEM_MALLOC_CONF (not MALLOC_CONF); a MALLOC_CONF
        given without _RJEM_MALLOC_CONF is copied there.

          --verbose   say on stderr what was added, or why nothing was
          -h, --help  show this help

        Example (Procfile):  worker: bundle exec sidekiq_rust exec -- sidekiq -C config/sidekiq.yml

        Exit status: COMMAND's own; 1 when COMMAND cannot be run or the bundled jemalloc is missing; 2 on a usage
        error.
      TEXT

      # What `parse` read from the command line.
      Options = Struct.new(:help, :verbose, :command, keyword_init: true)

      # What `plan` decided: the variables to set for COMMAND (empty: run it unchanged) and the reasons, for --verbose.
      Plan = Struct.new(:env, :notes, keyword_init: true)

      JEMALLOC = /jemalloc/.freeze
      OTHER_ALLOCATORS = /tcmalloc|mimalloc/.freeze

      # `env` is read, never written; `rbconfig` and `jemalloc_path` exist for tests.
      def initialize(out: $stdout, err: $stderr, env: ENV, rbconfig: RbConfig::CONFIG, jemalloc_path: nil)
        super(out: out, err: err, env: env)
        @rbconfig = rbconfig
        @jemalloc_path = jemalloc_path
      end

      def execute(options)
        changes = plan
        changes.notes.each { |note| @err.puts("sidekiq_rust exec: #{note}") } if options.verbose
        exec_command(changes.env, options.command)
      rescue NotSupported => e
        @err.puts("sidekiq_rust exec: #{e.message}")
        EXIT_PROBLEMS
      end

      # Reads `[--verbose] [--] COMMAND [ARGS...]`: options stop at `--` or at the first word that is not one.
      def parse(argv)
        args = argv.dup
        verbose = false
        until args.empty?
          case args.first
          when "--"
            args.shift
            break
          when "--verbose"
            verbose = true
            args.shift
          when "-h", "--help"
            return Options.new(help: true, verbose: verbose, command: [])
          when /\A-/
            raise UsageError, "unknown option #{args.first.inspect}"
          else
            break
          end
        end
        raise UsageError, "no COMMAND given" if args.empty?

        Options.new(help: false, verbose: verbose, command: args)
      end

      # What to change in COMMAND's environment, and why.
      def plan
        current = @env["LD_PRELOAD"].to_s
        entries = preload_entries(current)
        jemalloc = entries.find { |entry| jemalloc_file?(entry) }
        return unchanged("LD_PRELOAD already has a jemalloc (#{jemalloc}): not adding the bundled one") if jemalloc

        other = entries.find { |entry| File.basename(entry).match?(OTHER_ALLOCATORS) }
        if other
          return unchanged("LD_PRELOAD already has another allocator (#{other}): not adding jemalloc, " \
                           "one process gets one allocator")
        end

        flag = ruby_jemalloc_flag
        return unchanged("this Ruby is linked with jemalloc (#{flag} in RbConfig): not adding the bundled one") if flag

        add_jemalloc(current)
      end

      # The entries of an LD_PRELOAD value, which ld.so separates by colons and spaces.
      def preload_entries(value)
        value.to_s.split(/[:\s]+/).reject(&:empty?)
      end

      # Whether an LD_PRELOAD entry is a jemalloc: by its name or, for a link (Rails 8.1's Dockerfile preloads
      # /usr/local/lib/libjemalloc.so, a link to Debian's libjemalloc.so.2), by the name of the file it leads to.
      def jemalloc_file?(entry)
        return true if File.basename(entry).match?(JEMALLOC)

        entry.include?("/") && File.basename(File.realpath(entry)).match?(JEMALLOC)
      rescue SystemCallError
        false
      end

      # The flag of RbConfig's MAINLIBS or LIBS that links this Ruby with jemalloc (--with-jemalloc), or nil.
      def ruby_jemalloc_flag
        %w[MAINLIBS LIBS].each do |key|
          flag = @rbconfig[key].to_s.split.find { |word| word.start_with?("-ljemalloc") }
          return flag if flag
        end
        nil
      end

      private

      def unchanged(note)
        Plan.new(env: {}, notes: [note])
      end

      def add_jemalloc(current)
        path = @jemalloc_path || SidekiqRust.jemalloc_path
        if path.match?(/[:\s]/)
          raise NotSupported, "the bundled jemalloc's path #{path.inspect} contains a colon or a space, which " \
                              "LD_PRELOAD cannot carry: install the gem under a path without them"
        end

        preload = current.strip.empty? ? path : "#{current.strip}:#{path}"
        env = { "LD_PRELOAD" => preload }
        notes = ["LD_PRELOAD=#{preload}"]
        malloc_conf = @env["MALLOC_CONF"].to_s
        if !malloc_conf.empty? && @env["_RJEM_MALLOC_CONF"].nil?
          env["_RJEM_MALLOC_CONF"] = malloc_conf
          notes << "_RJEM_MALLOC_CONF=#{malloc_conf} (copied from MALLOC_CONF: the bundled jemalloc reads that one)"
        end
        Plan.new(env: env, notes: notes)
      end

      def exec_command(env, command)
        # The [program, argv0] form never goes through a shell, even for a single word.
        Kernel.exec(env, [command.first, command.first], *command.drop(1))
      rescue SystemCallError => e
        @err.puts("sidekiq_rust exec: cannot run #{command.first.inspect}: #{e.message} " \
                  "(is it installed, and on PATH?)")
        EXIT_PROBLEMS
      end
    end
  end
end
