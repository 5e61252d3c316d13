# frozen_string_literal: true

require "spec_helper"
require "sidekiq_rust/options_table"

# One options table drives the accessors, the checks, the resolved Settings, the native guard's Hash, the
# generator's initializer and the docs' configuration table.
RSpec.describe "SidekiqRust::OPTIONS" do
  let(:root) { File.expand_path("..", __dir__) }
  let(:keys) { SidekiqRust::OPTION_KEYS }

  it "gives every key an accessor with its default, and a member of the resolved Settings" do
    config = SidekiqRust::Configuration.new
    accessors = SidekiqRust::Configuration.public_instance_methods(false).grep(/\A\w+=\z/)
    expect(accessors.map { |m| m.to_s.chomp("=").to_sym }).to match_array(keys)
    SidekiqRust::OPTIONS.each { |option| expect(config.public_send(option.key)).to eq(option.default), option.key.to_s }
    # ... and, where a limit is a percentage, its share of the cgroup's limit and that limit (the guard follows it).
    expect(SidekiqRust::Settings.members).to eq(keys + %i[max_rss_share hard_max_rss_share cgroup_limit])
  end

  it "checks every key by its form, naming it" do
    bad = { size: "300 megs", metric: :vms, seconds: "soon", positive_seconds: 0, positive_seconds_or_nil: -1,
            boolean: "yes", count: -1, callable: 5, logger: 5, share: 7, percentage_or_nil: 500 }
    SidekiqRust::OPTIONS.each do |option|
      expect(bad).to have_key(option.form), "#{option.key}'s form #{option.form} has a bad value in this spec"
      config = SidekiqRust::Configuration.new
      config.max_rss = 500 unless option.key == :max_rss
      config.public_send("#{option.key}=", bad.fetch(option.form))
      expect { config.check }.to raise_error(SidekiqRust::ConfigurationError, /\A[^:]+: #{option.key} is /),
                                 option.key.to_s
    end
  end

  it "documents every key, and the tables of README.md and docs/configuration.md are written from it" do
    SidekiqRust::OPTIONS.each do |option|
      expect([option.accepted, option.summary, option.meaning]).to all(be_a(String).and(satisfy { |t| !t.empty? }))
    end
    table = SidekiqRust::OptionsTable.markdown
    expect(table.lines.size).to eq(keys.size + 2)
    SidekiqRust::OptionsTable::FILES.each do |file|
      text = File.read(File.join(root, file))
      expect(SidekiqRust::OptionsTable.current(text)).to eq(table),
                                                        "#{file}'s configuration table differs from " \
                                                        "lib/sidekiq_rust/options.rb: run `bundle exec rake docs:options`"
    end
  end
end
