# frozen_string_literal: true

# The test matrix, one definition read by the Rakefile (`rake spec`, `rake spec:preload`), bin/matrix and
# bin/setup (through bin/matrix): each entry is a Ruby (its bin directory goes first on PATH) and a Gemfile.
module SidekiqRustMatrix
  ROOT = File.expand_path("..", __dir__)

  # Where bin/setup builds Ruby 3.4; SIDEKIQ_RUST_RUBY34_PREFIX moves it (for bin/setup too).
  RUBY34_PREFIX = ENV.fetch("SIDEKIQ_RUST_RUBY34_PREFIX", "/opt/sidekiq_rust/ruby-3.4")

  # Variables of the calling environment that would make the entry's Ruby load another Gemfile or gem set.
  CLEARED = %w[RUBYOPT RUBYLIB GEM_HOME GEM_PATH BUNDLER_SETUP BUNDLE_BIN_PATH BUNDLER_VERSION].freeze

  Entry = Struct.new(:name, :ruby_bin, :gemfile, :description, keyword_init: true) do
    def ruby
      File.join(ruby_bin, "ruby")
    end

    def gemfile_path
      File.join(ROOT, gemfile)
    end

    # The environment a command of this entry runs in.
    def env
      cleared = CLEARED.to_h { |name| [name, nil] }
      cleared.merge("PATH" => "#{ruby_bin}:#{ENV.fetch('PATH', '')}", "BUNDLE_GEMFILE" => gemfile_path)
    end

    # Whether this entry's Ruby is the one running now (same executable).
    def current_ruby?
      File.exist?(ruby) && File.realpath(ruby) == File.realpath(RbConfig.ruby)
    end
  end

  ENTRIES = [
    Entry.new(name: "sidekiq6", ruby_bin: "/usr/bin", gemfile: "Gemfile",
              description: "Ruby 3.1 (Debian) x Sidekiq 6.4.1 (redis 4.8)"),
    Entry.new(name: "sidekiq7", ruby_bin: "/usr/bin", gemfile: "gemfiles/sidekiq7.gemfile",
              description: "Ruby 3.1 (Debian) x Sidekiq 7.3.2 (redis-client 0.22)"),
    Entry.new(name: "sidekiq8", ruby_bin: File.join(RUBY34_PREFIX, "bin"), gemfile: "gemfiles/sidekiq8.gemfile",
              description: "Ruby 3.4.5 (bin/setup) x Sidekiq 8.1.7 (redis-client 0.31)")
  ].freeze

  def self.names
    ENTRIES.map(&:name)
  end

  # The entry called `name`, or nil.
  def self.find(name)
    ENTRIES.find { |entry| entry.name == name }
  end
end
