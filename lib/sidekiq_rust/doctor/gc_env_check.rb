# frozen_string_literal: true

module SidekiqRust
  module Doctor
    # The `gc env` check (reported, not judged): the GC and malloc variables set in the environment.
    module GcEnvCheck
      PREFIXES = %w[RUBY_GC_ RUBY_YJIT MALLOC_ LD_PRELOAD GLIBC_TUNABLES].freeze

      module_function

      def check(env)
        vars = env.keys.select { |k| PREFIXES.any? { |p| k.start_with?(p) } }.sort
        saw = vars.empty? ? "no GC or malloc variables set" : vars.map { |k| "#{k}=#{env[k]}" }.join(" ")
        Check.new(name: "gc env", status: :info, saw: saw)
      end
    end
  end
end
