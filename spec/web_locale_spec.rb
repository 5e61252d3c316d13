# frozen_string_literal: true

require "spec_helper"
require "yaml"

# What Sidekiq 8.1's own locale parser reads (it parses by hand, not with YAML): flat `key: value` lines under the
# language, simple keys, no blank lines, no quotes; YAML (Sidekiq 6.4 / 7.x) reads the same file.
RSpec.describe "the Memory tab's locale file" do
  it "is flat key: value lines that YAML reads too" do
    path = File.expand_path("../lib/sidekiq_rust/web/locales/en.yml", __dir__)
    lines = File.read(path).lines.map(&:chomp)
    expect(lines.first).to eq("en:")
    expect(lines.drop(1)).to all(match(/\A  [A-Za-z]+: [^:"'#]+\z/))
    expect(YAML.safe_load(File.read(path))["en"]).to include("Memory" => "Memory")
  end
end
