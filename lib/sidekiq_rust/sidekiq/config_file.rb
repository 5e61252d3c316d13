# frozen_string_literal: true

require "erb"
require "yaml"

module SidekiqRust
  # Reads Sidekiq's configuration file (`config/sidekiq.yml`, `-C FILE`) the way `sidekiq` does: ERB first, then
  # YAML, keys as Symbols, and the section named after the environment merged over the top level. Used by the
  # commands that must agree with the Sidekiq they describe (doctor, systemd).
  module SidekiqConfigFile
    # Where `sidekiq` looks when it gets no -C, in its order.
    DEFAULT_PATHS = %w[config/sidekiq.yml config/sidekiq.yml.erb].freeze

    module_function

    # Sidekiq's environment: APP_ENV, RAILS_ENV, RACK_ENV, else "development" (its -e wins over them all).
    def environment(env = ENV)
      env["APP_ENV"] || env["RAILS_ENV"] || env["RACK_ENV"] || "development"
    end

    # The file `sidekiq` would read in `dir` without -C, or nil.
    def find(dir = Dir.pwd)
      DEFAULT_PATHS.map { |path| File.join(dir, path) }.find { |path| File.exist?(path) }
    end

    # The options of `path` for `environment`: {concurrency: 3, timeout: 10, queues: [...], ...}. Raises
    # ConfigurationError naming the file when it cannot be read or is not a YAML mapping.
    def read(path, environment:)
      erb = ERB.new(File.read(path), trim_mode: "-")
      erb.filename = File.expand_path(path)
      options = YAML.safe_load(erb.result, permitted_classes: [Symbol], aliases: true) || {}
      raise ConfigurationError, "#{path}: expected a YAML mapping of Sidekiq options" unless options.is_a?(Hash)

      options = symbolize(options)
      section = options.delete(environment.to_sym)
      section.is_a?(Hash) ? options.merge(section) : options
    rescue ConfigurationError
      raise
    rescue StandardError, SyntaxError => e # SyntaxError: an ERB mistake
      raise ConfigurationError, "cannot read Sidekiq's configuration #{path}: #{e.class}: #{e.message}"
    end

    def symbolize(value)
      case value
      when Hash then value.to_h { |k, v| [k.to_s.delete_prefix(":").to_sym, symbolize(v)] }
      when Array then value.map { |v| symbolize(v) }
      else value
      end
    end
  end
end
