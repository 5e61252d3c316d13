# frozen_string_literal: true

desc "cargo test of the pure Rust core, clippy -D warnings and fmt --check over the workspace"
task :cargo do
  sh "cargo", "test", "-p", "sidekiq_rust_core"
  sh "cargo", "clippy", "--workspace", "--all-targets", "--", "-D", "warnings"
  sh "cargo", "fmt", "--all", "--", "--check"
end
