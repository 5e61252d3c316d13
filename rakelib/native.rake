# frozen_string_literal: true

# The precompiled platform gem: the source gem compiled by its own extconf.rb for each distinct Ruby of the matrix
# (tasks/source_install.rb; cached per source and Ruby under SIDEKIQ_RUST_PACKAGING_CACHE or the system's tmp),
# each extension in lib/sidekiq_rust/X.Y/ (`rake build` makes the source gem).
namespace :native do
  desc "Build pkg/sidekiq_rust-VERSION-x86_64-linux.gem, precompiled for every matrix Ruby (no Rust needed to install)"
  task :gem do
    rubies = SidekiqRustMatrix::ENTRIES.map(&:ruby).uniq
    missing = rubies.reject { |ruby| File.executable?(ruby) }
    abort "native:gem needs #{missing.join(', ')}: run bin/setup" unless missing.empty?

    installs = rubies.map { |ruby| SidekiqRustPackaging::SourceInstall.new(ruby) }
    installs.each { |install| puts "compiled for Ruby #{install.ruby_version} in #{install.seconds}s (#{install.dir})" }
    gem_file = SidekiqRustPackaging::NativeGem.new(installs).build(File.expand_path("../pkg", __dir__))
    puts "built #{gem_file}"
  end
end
