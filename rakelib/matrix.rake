# frozen_string_literal: true

namespace :matrix do
  SidekiqRustMatrix::ENTRIES.each do |entry|
    desc "Compile the extension for #{entry.name}'s Ruby (#{entry.ruby})"
    task "compile:#{entry.name}" => :compile do
      run_in_entry(entry, "bundle", "exec", "rake", "compile:sidekiq_rust") unless entry.current_ruby?
    end
  end
end
