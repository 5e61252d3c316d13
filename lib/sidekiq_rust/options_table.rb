# frozen_string_literal: true

require_relative "options"

module SidekiqRust
  # The configuration table of README.md and docs/configuration.md, written from OPTIONS between two marker lines
  # (`rake docs:options` writes it; spec/options_spec.rb fails when a file's table differs). Not loaded at run time.
  module OptionsTable
    START = "<!-- options table: generated from lib/sidekiq_rust/options.rb by `rake docs:options`; " \
            "do not edit by hand -->"
    FINISH = "<!-- end options table -->"
    FILES = %w[README.md docs/configuration.md].freeze

    module_function

    # The Markdown table, one row a key.
    def markdown
      rows = OPTIONS.map do |option|
        default = option.default_text || "`#{option.default.inspect}`"
        "| `#{option.key}` | #{default} | #{option.accepted} | #{option.meaning} |"
      end
      ["| key | default | accepted | meaning |", "|---|---|---|---|", *rows].join("\n")
    end

    # The table between the markers of `text`, nil when it has no markers.
    def current(text)
      from = text.index(START)
      to = text.index(FINISH)
      return nil unless from && to && to > from

      text[(from + START.size)...to].strip
    end

    # `text` with the markers' content replaced by the table; raises when the markers are missing.
    def write(text, path)
      from = text.index(START)
      to = text.index(FINISH)
      raise Error, "#{path} has no options table markers (#{START} ... #{FINISH})" unless from && to && to > from

      "#{text[0, from + START.size]}\n#{markdown}\n#{text[to..]}"
    end
  end
end
