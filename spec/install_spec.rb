# frozen_string_literal: true

require "spec_helper"

# The source gem as a Rails team gets it from a .gem file: `gem build`, then `gem install --local` into an empty
# GEM_HOME whose only other gems are this Ruby's own (Debian's: rb_sys and sidekiq resolve from them), which
# compiles the extension and the bundled jemalloc through the gem's extconf.rb files. The installed copy then runs
# from a temporary directory (spec/support/installed_gem.rb). The compiled install is cached per source digest and
# Ruby (tasks/source_install.rb): the first run of a source compiles for minutes, the others reuse it.
RSpec.describe "the source gem, installed with `gem install --local` (Ruby #{RUBY_VERSION}, Sidekiq " \
               "#{Sidekiq::VERSION})", install: true do
  before(:all) do
    @install = SidekiqRustPackaging::SourceInstall.new(RbConfig.ruby)
    @home = @install.gem_home
  end

  let(:home) { @home }
  let(:path) { ENV.fetch("PATH") }
  let(:extension) { "sidekiq_rust/sidekiq_rust.so" }

  it "holds what it needs and nothing else" do
    spec = Gem::Package.new(@install.gem_file).spec
    expect(spec.files).to include("lib/sidekiq_rust.rb", "exe/sidekiq_rust", "Cargo.toml", "Cargo.lock",
                                  "ext/sidekiq_rust/extconf.rb", "ext/sidekiq_rust_jemalloc/extconf.rb",
                                  "ext/sidekiq_rust_core/src/lib.rs",
                                  "lib/generators/sidekiq_rust/install/templates/initializer.rb.tt", "README.md")
    expect(spec.files.grep(%r{\A(target|tmp|spec|bench|pkg|bin|docs|gemfiles)/|\.(so|gem)\z})).to eq([])
    expect(spec.extensions).to eq(%w[ext/sidekiq_rust/extconf.rb ext/sidekiq_rust_jemalloc/extconf.rb])
  end

  it "was compiled in the GEM_HOME, its dependencies resolved from the Ruby's own gems and installed nowhere else" do
    log = File.read(File.join(@install.dir, "install.log"))
    expect(log).to include("Building native extensions", "Successfully installed sidekiq_rust-#{SidekiqRust::VERSION}")
    installed = Dir[File.join(home.dir, "specifications", "*.gemspec")].map { |f| File.basename(f, ".gemspec") }
    expect(installed).to eq(["sidekiq_rust-#{SidekiqRust::VERSION}"])
    gem_dir = home.gem_dir("sidekiq_rust")
    expect(File.file?(File.join(gem_dir, "lib/sidekiq_rust/sidekiq_rust.so"))).to be(true)
    expect(File.file?(File.join(gem_dir, "lib/sidekiq_rust/sidekiq_rust_jemalloc.so"))).to be(true)
    expect(Dir.exist?(File.join(gem_dir, "target"))).to be(false)
    puts "    (compiled from the source gem in #{@install.seconds}s, cached in #{@install.dir})"
  end

  it_behaves_like "an installed sidekiq_rust"
end
