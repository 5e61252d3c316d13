# frozen_string_literal: true

require "spec_helper"

# The precompiled x86_64-linux gem (`rake native:gem`, tasks/native_gem.rb): the extension of every matrix Ruby in
# lib/sidekiq_rust/X.Y/ and the bundled jemalloc, installed with `gem install --local` into an empty GEM_HOME with
# no cargo or rustc on PATH, then run from a temporary directory (spec/support/installed_gem.rb). Building it
# compiles the source gem for each Ruby once per source (cached, shared with spec/install_spec.rb).
RSpec.describe "the precompiled x86_64-linux gem (Ruby #{RUBY_VERSION}, Sidekiq #{Sidekiq::VERSION})",
               install: true do
  NATIVE_RUBIES = SidekiqRustMatrix::ENTRIES.map(&:ruby).uniq.freeze
  NATIVE_MINOR = RUBY_VERSION[/\A\d+\.\d+/]

  before(:all) do
    missing = NATIVE_RUBIES.reject { |ruby| File.executable?(ruby) }
    skip "the native gem carries every matrix Ruby; #{missing.join(', ')} missing (run bin/setup)" unless
      missing.empty?

    @dir = Dir.mktmpdir("sidekiq_rust-native-gem")
    installs = NATIVE_RUBIES.map { |ruby| SidekiqRustPackaging::SourceInstall.new(ruby) }
    @native = SidekiqRustPackaging::NativeGem.new(installs)
    @gem_file = @native.build(@dir)
    @home = SidekiqRustPackaging::GemHome.new(RbConfig.ruby, File.join(@dir, "gem_home"))
    @install_log = @home.install(@gem_file, env: { "PATH" => InstalledGem.path_without_rust })
  end

  after(:all) { FileUtils.rm_rf(@dir) if @dir }

  let(:home) { @home }
  let(:path) { InstalledGem.path_without_rust }
  let(:extension) { "sidekiq_rust/#{NATIVE_MINOR}/sidekiq_rust.so" }

  it "carries the extension of every matrix Ruby and the bundled jemalloc, and builds nothing when installed" do
    expect(File.basename(@gem_file)).to eq("sidekiq_rust-#{SidekiqRust::VERSION}-x86_64-linux.gem")
    expect(@native.ruby_minors).to eq(%w[3.1 3.4])
    spec = Gem::Package.new(@gem_file).spec
    expect(spec.platform.to_s).to eq("x86_64-linux")
    expect(spec.extensions).to eq([])
    expect(spec.files).to include("lib/sidekiq_rust/3.1/sidekiq_rust.so", "lib/sidekiq_rust/3.4/sidekiq_rust.so",
                                  "lib/sidekiq_rust/sidekiq_rust_jemalloc.so", "lib/sidekiq_rust.rb")
    expect(spec.files.grep(%r{\A(target|tmp|spec|bench|pkg)/})).to eq([])
    expect(spec.dependencies.map(&:name)).to eq(%w[sidekiq])
    expect(spec.required_ruby_version).to eq(Gem::Requirement.new(">= 3.1", "< 3.5"))
    expect(@install_log).to include("Successfully installed sidekiq_rust-#{SidekiqRust::VERSION}-x86_64-linux")
    expect(@install_log).not_to include("Building native extensions")
    installed = Dir[File.join(home.dir, "specifications", "*.gemspec")].map { |f| File.basename(f, ".gemspec") }
    expect(installed).to eq(["sidekiq_rust-#{SidekiqRust::VERSION}-x86_64-linux"])
  end

  it "runs where neither cargo nor rustc is on PATH" do
    out, status = Open3.capture2e({ "PATH" => path }, "sh", "-c", "command -v cargo || command -v rustc")
    expect(status.success?).to be(false), out
    expect(out).to eq("")
  end

  it_behaves_like "an installed sidekiq_rust"
end
