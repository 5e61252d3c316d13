# frozen_string_literal: true

require "spec_helper"

# What a user of the matrix entry types: `bundle exec sidekiq` must run the Sidekiq of the entry's bundle on the
# entry's Ruby (bin/setup writes the executables of the gems it copies into Ruby 3.4; without them Debian's Ruby
# 3.1 /usr/bin/sidekiq ran and failed to load Ruby 3.4's bundle).
RSpec.describe "bundle exec sidekiq (Sidekiq #{Sidekiq::VERSION}, Ruby #{RUBY_VERSION})" do
  def executable_on_path(name)
    ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).map { |dir| File.join(dir, name) }
       .find { |path| File.file?(path) && File.executable?(path) }
  end

  it "finds a sidekiq executable on PATH written for this Ruby" do
    path = executable_on_path("sidekiq")
    expect(path).not_to be_nil, "no sidekiq on PATH (#{ENV.fetch('PATH', '')}): run bin/setup"
    shebang = File.open(path, &:gets).to_s.chomp
    interpreter = shebang.delete_prefix("#!").split.first.to_s
    expect(File.exist?(interpreter) && File.realpath(interpreter)).to eq(File.realpath(RbConfig.ruby)),
                                                                      "#{path} starts with #{shebang.inspect}"
  end

  it "prints the bundle's Sidekiq version with --version" do
    out, err, status = Open3.capture3("bundle", "exec", "sidekiq", "--version", stdin_data: "")
    expect(status).to be_success, "exit #{status.inspect}:\n#{err}"
    expect(out).to eq("Sidekiq #{Sidekiq::VERSION}\n")
  end
end
