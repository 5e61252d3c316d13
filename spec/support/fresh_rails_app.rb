# frozen_string_literal: true

require "open3"
require "rbconfig"
require "shellwords"
require_relative "sidekiq_process"

# A Rails app made the way a team makes one, for spec/rails72_app_spec.rb: `rails _7.2.4_ new --minimal` with the
# running Ruby's `rails` (railties from Debian sid, bin/setup), its Gemfile resolved offline with
# `bundle install --local`, sidekiq_rust from this checkout (`gem "sidekiq_rust", path:`). Every command runs in
# the app's directory outside the suite's Bundler, the running Ruby's bin directory first on PATH.
class FreshRailsApp
  CHECKOUT = File.expand_path("../..", __dir__)
  RAILS = "7.2.4"
  # `--minimal` as a team types it; the other options only leave out what this offline machine cannot install
  # (no RubyGems registry: `bundle install --local` later, and no sprockets-rails, brakeman or rubocop gems).
  NEW_OPTIONS = %w[--minimal --skip-bundle --skip-git --skip-asset-pipeline --skip-brakeman --skip-rubocop].freeze
  # The gem of each framework config/application.rb requires (`require "action_controller/railtie"`).
  FRAMEWORK_GEMS = { "active_model" => "activemodel", "active_job" => "activejob", "active_record" => "activerecord",
                     "action_controller" => "actionpack", "action_view" => "actionview",
                     "action_mailer" => "actionmailer" }.freeze

  attr_reader :root

  def initialize(parent, env: {})
    @parent = parent
    @root = File.join(parent, "app")
    @env = { "PATH" => "#{RbConfig::CONFIG['bindir']}#{File::PATH_SEPARATOR}#{ENV.fetch('PATH', '')}" }.merge(env)
  end

  # `rails new`, then the Gemfile as this machine can resolve it (see #offline_gemfile), `bundle install --local`.
  def create
    run!(File.join(RbConfig::CONFIG["bindir"], "rails"), "_#{RAILS}_", "new", "app", *NEW_OPTIONS, chdir: @parent)
    write("Gemfile", offline_gemfile(read("Gemfile")))
    File.write(path("Gemfile"), <<~GEMS, mode: "a")

      gem "sidekiq", "~> 8.1"
      gem "sidekiq_rust", path: #{CHECKOUT.inspect}
    GEMS
    run!("bundle", "install", "--local", "--quiet")
    self
  end

  # The Gemfile `rails new` wrote, with the two lines this machine cannot resolve replaced: `gem "rails"` by the
  # frameworks config/application.rb loads (no `rails` meta gem here: sid's actioncable needs nio4r and
  # websocket-driver, not served), and `gem "puma"` by WEBrick (no puma here either). Everything else stays.
  def offline_gemfile(gemfile)
    frameworks = read("config/application.rb").scan(%r{^require "(\w+)/railtie"}).flatten
    gems = ["railties"] + frameworks.map { |name| FRAMEWORK_GEMS.fetch(name) }
    rails_line = /^gem "rails", "~> (#{Regexp.escape(RAILS)})"\n/
    raise "rails new wrote no `gem \"rails\"` line:\n#{gemfile}" unless gemfile.match?(rails_line)
    raise "rails new wrote no `gem \"puma\"` line:\n#{gemfile}" unless gemfile.match?(/^gem "puma".*\n/)

    gemfile.sub(rails_line) { gems.uniq.map { |gem| %(gem "#{gem}", "~> #{RAILS}"\n) }.join }
           .sub(/^gem "puma".*\n/, %(gem "webrick"\n))
  end

  def path(relative)
    File.join(@root, relative)
  end

  def read(relative)
    File.read(path(relative))
  end

  def write(relative, text)
    File.write(path(relative), text)
  end

  # Runs a command in the app; returns [output, status].
  def run(*command, env: {}, chdir: @root)
    Bundler.with_unbundled_env { Open3.capture2e(@env.merge(env), *command, chdir: chdir, stdin_data: "") }
  end

  # Runs a command that must succeed; returns its output.
  def run!(*command, env: {}, chdir: @root)
    out, status = run(*command, env: env, chdir: chdir)
    raise "`#{command.shelljoin}` failed (#{status.inspect}) in #{chdir}:\n#{out}" unless status.success?

    out
  end

  # Starts a command in the app, its output to `log`; returns its pid.
  def spawn(*command, log:, env: {})
    Bundler.with_unbundled_env do
      Process.spawn(@env.merge(env), *command, chdir: @root, out: log, err: [:child, :out])
    end
  end

  # Writes `code` (lines) into config/routes.rb's `Rails.application.routes.draw do` block, at its end.
  def draw_routes(code)
    routes = read("config/routes.rb")
    last_end = routes.rindex(/^end\b/) or raise "config/routes.rb has no closing `end`:\n#{routes}"
    body = code.map { |line| line.strip.empty? ? "\n" : "  #{line}\n" }.join
    write("config/routes.rb", "#{routes[0...last_end]}\n#{body}#{routes[last_end..]}")
  end

  # The next steps `bin/rails generate sidekiq_rust:install` printed, as a team reads them: numbered steps, each
  # with its text and its code block (the lines indented under it by five spaces or more).
  class NextSteps
    Step = Struct.new(:number, :text, :code, keyword_init: true)

    attr_reader :steps

    def initialize(output)
      body = output[/Next steps:\n(.*)\z/m, 1] or raise "the generator printed no next steps:\n#{output}"
      @steps = body.split(/^(?=\d+\. )/).grep(/\A\d+\. /).map do |chunk|
        lines = chunk.lines.map(&:chomp)
        code = lines.each_index.select { |i| lines[i].start_with?("     ") || code_gap?(lines, i) }
                    .map { |i| lines[i].sub(/\A {5}/, "") }
        Step.new(number: chunk.to_i, text: chunk, code: code)
      end
    end

    # The step whose text matches.
    def find(pattern)
      @steps.find { |step| step.text.match?(pattern) } or raise "no printed step matches #{pattern.inspect}:\n#{text}"
    end

    # The command of the step that runs Sidekiq (a code line `bundle exec sidekiq_rust exec -- sidekiq ...`).
    def start_command
      line = @steps.flat_map(&:code).find { |code| code.match?(/\A\s*bundle exec sidekiq_rust exec /) }
      line or raise "no printed step runs `bundle exec sidekiq_rust exec`:\n#{text}"
      line.strip.shellsplit
    end

    # A command named in a step's text or code (`bundle exec sidekiq_rust doctor`).
    def command(pattern)
      text[/#{pattern}[^`\n]*/]&.strip&.shellsplit or raise "no printed step names #{pattern.inspect}:\n#{text}"
    end

    def text
      @steps.map(&:text).join
    end

    private

    # A blank line between two code lines belongs to the block.
    def code_gap?(lines, index)
      return false unless lines[index].strip.empty?

      before = lines[0...index].reverse.find { |line| !line.strip.empty? }
      after = lines[(index + 1)..].find { |line| !line.strip.empty? }
      [before, after].all? { |line| line&.start_with?("     ") }
    end
  end
end

# One Sidekiq process of the fresh app, started by the generator's printed command at the app's root (a Supervisor
# slot builds these); everything else (log, identity, alive?, stop) as SidekiqProcess.
class FreshAppSidekiq < SidekiqProcess
  def initialize(name, app:, command:, dir:, env: {})
    super(name, redis: nil, dir: dir)
    @app = app
    @command = command
    @app_env = env
  end

  def start
    @pid = @app.spawn(*@command, log: @log_path, env: @app_env)
    wait_for_log(/guard started/, timeout: 60)
    self
  end
end
