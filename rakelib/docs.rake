# frozen_string_literal: true

namespace :docs do
  desc "Write the configuration table of README.md and docs/configuration.md from lib/sidekiq_rust/options.rb"
  task :options do
    require_relative "../lib/sidekiq_rust/error"
    require_relative "../lib/sidekiq_rust/options_table"
    SidekiqRust::OptionsTable::FILES.each do |file|
      path = File.expand_path("../#{file}", __dir__)
      text = File.read(path)
      updated = SidekiqRust::OptionsTable.write(text, file)
      next if updated == text

      File.write(path, updated)
      puts "wrote the options table of #{file}"
    end
  end
end
