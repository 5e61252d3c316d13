# frozen_string_literal: true

require "open3"

module SidekiqRustPackaging
  ROOT = File.expand_path("..", __dir__)

  # What would make a Ruby load Bundler, a Gemfile, the checkout's lib, another gem set or the checkout's jemalloc
  # (`rake spec:preload`): cleared for every command of a GemHome, so that what runs comes from the gems installed
  # there and the Ruby's own.
  CLEAN_ENV = %w[RUBYOPT RUBYLIB GEM_HOME GEM_PATH BUNDLE_GEMFILE BUNDLER_SETUP BUNDLE_BIN_PATH BUNDLER_VERSION
                 BUNDLE_APP_CONFIG RB_SYS_CARGO_MANIFEST_DIR LD_PRELOAD].to_h { |name| [name, nil] }.freeze

  # Raised when a packaging command fails; the message holds the command and its output.
  class CommandFailed < StandardError; end

  # Runs a command; returns its output (stdout and stderr), raising CommandFailed on a non-zero exit.
  def self.run(env, *command, chdir: Dir.pwd)
    out, status = Open3.capture2e(env, *command, chdir: chdir, stdin_data: "")
    raise CommandFailed, "#{command.join(' ')} failed (#{status}) in #{chdir}:\n#{out}" unless status.success?

    out
  end

  # A GEM_HOME of one Ruby, empty until something is installed in it; its GEM_PATH is that Ruby's own gem
  # directories (Debian's packaged gems here) and nothing else: not the user's ~/.local gems, not Bundler's.
  class GemHome
    attr_reader :ruby, :dir

    def initialize(ruby, dir)
      @ruby = ruby
      @dir = dir
    end

    # The Ruby's own gem directories, as it finds them without GEM_HOME/GEM_PATH.
    def system_path
      @system_path ||= SidekiqRustPackaging.run(
        CLEAN_ENV, ruby, "-e", "print((Gem.default_path - [Gem.user_dir]).join(File::PATH_SEPARATOR))"
      )
    end

    # The environment of a command that uses this GEM_HOME.
    def env
      CLEAN_ENV.merge("GEM_HOME" => dir, "GEM_PATH" => [dir, system_path].join(File::PATH_SEPARATOR))
    end

    # `gem ARGS` of this Ruby; returns its output.
    def gem(*args, env: {}, chdir: dir)
      SidekiqRustPackaging.run(self.env.merge(env), ruby, File.join(File.dirname(ruby), "gem"), *args, chdir: chdir)
    end

    # `gem install --local` of a .gem file: its dependencies resolve from the gems already installed (this Ruby's),
    # never from a remote source. Returns the output.
    def install(gem_file, env: {})
      gem("install", "--local", "--no-document", gem_file, env: env, chdir: File.dirname(gem_file))
    end

    # The directory of an installed gem (the first of that name).
    def gem_dir(name)
      Dir[File.join(dir, "gems", "#{name}-[0-9]*")].min
    end

    # The path of an executable installed with a gem (GEM_HOME/bin).
    def bin(name)
      File.join(dir, "bin", name)
    end
  end
end
