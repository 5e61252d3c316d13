# frozen_string_literal: true

require "spec_helper"

# The README's quick start is what the generator prints (spec/rails72_app_spec.rb runs the printed steps in a fresh
# Rails 7.2 app, spec/rails_app_spec.rb in the Rails 6.1 one): its routes code and its start command, line for line.
RSpec.describe "README.md's quick start" do
  let(:root) { File.expand_path("..", __dir__) }
  let(:readme) { File.read(File.join(root, "README.md")) }
  let(:printed) do
    File.read(File.join(root, "lib/generators/sidekiq_rust/install/templates/next_steps.txt"))
  end

  def code_lines(text)
    text.lines.map(&:strip).reject { |line| line.empty? || line.start_with?("#") }
  end

  it "shows the routes code and the start command the generator prints" do
    quick_start = readme[/^## Quick start.*?(?=^## )/m]
    routes = quick_start[/```ruby\n(.*?)```/m, 1]
    expect(code_lines(routes)).not_to be_empty
    code_lines(routes).each { |line| expect(printed).to include(line.sub(/\s+#.*\z/, "")) }
    command = "bundle exec sidekiq_rust exec -- sidekiq -C config/sidekiq.yml"
    expect(quick_start).to include(command)
    expect(printed).to include(command)
    expect(quick_start).to include("bin/rails generate sidekiq_rust:install").or include("generator")
  end

  it "stays a front page of at most 250 lines" do
    expect(readme.lines.size).to be <= 250
  end
end
