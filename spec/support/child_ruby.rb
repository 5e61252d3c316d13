# frozen_string_literal: true

# Runs Ruby code in a child process with this checkout's lib on the load path.
module ChildRuby
  LIB = File.expand_path("../../lib", __dir__)
  # What makes a child Ruby load Bundler and a Gemfile: cleared for a child that must stand alone. Bundler 2.5+
  # passes BUNDLER_SETUP too, and a child that still sees it falls back to the checkout's root Gemfile.
  UNBUNDLED_ENV = { "RUBYOPT" => nil, "BUNDLE_GEMFILE" => nil, "BUNDLE_BIN_PATH" => nil, "RUBYLIB" => nil,
                    "BUNDLER_SETUP" => nil }.freeze

  # Runs `code` in a fresh Ruby and returns [stdout, stderr, status]. `env` may set LD_PRELOAD and friends.
  def run_ruby(code, env: {}, timeout: 120)
    Open3.capture3(env, RbConfig.ruby, "-I", LIB, "-rsidekiq_rust", "-e", code, stdin_data: "")
  end

  # Runs `code` in a fresh Ruby, expects success, returns its stdout.
  def ruby_output(code, env: {})
    out, err, status = run_ruby(code, env: env)
    raise "child Ruby failed (#{status.inspect}):\n#{err}\n#{out}" unless status.success?

    out
  end

  def vm_rss_bytes(pid = Process.pid)
    File.read("/proc/#{pid}/status")[/^VmRSS:\s+(\d+) kB/, 1].to_i * 1024
  end
end

module ChildRuby
  # Runs `code` in a child Ruby as the user nobody (the caller checks it is root). The checkout may sit in a
  # directory nobody cannot enter (mktemp -d is 0700), so the child loads a world-readable copy of lib/.
  def ruby_output_as_nobody(code)
    nobody = Etc.getpwnam("nobody")
    Dir.mktmpdir("sidekiq_rust-nobody") do |dir|
      File.chmod(0o755, dir)
      FileUtils.cp_r(LIB, dir)
      FileUtils.chmod_R("a+rX", dir)
      # Bundler's environment would make the child read a Gemfile nobody may not be able to read.
      out, err, status = Open3.capture3(UNBUNDLED_ENV, RbConfig.ruby, "-I", File.join(dir, "lib"), "-rsidekiq_rust", "-e", code,
                                        uid: nobody.uid, gid: nobody.gid, chdir: "/")
      raise "child Ruby failed (#{status.inspect}):\n#{err}" unless status.success?

      out
    end
  end
end
