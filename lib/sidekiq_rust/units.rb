# frozen_string_literal: true

module SidekiqRust
  # How the gem writes sizes: one place for the logs, the command line and the Memory tab.
  module Units
    MB = 1_048_576

    module_function

    # "512MB", whole megabytes; `none` for nil (the logs say "none", tables "-").
    def mb(bytes, none: "none")
      bytes.nil? ? none : format("%.0fMB", bytes / MB.to_f)
    end

    # "1.5MB", "12KB", "300B" (a per-job figure); "?" for unknown.
    def bytes(value)
      return "?" if value.nil?
      return format("%.1fMB", value / MB.to_f) if value.abs >= MB
      return format("%.0fKB", value / 1024.0) if value.abs >= 1024

      "#{value}B"
    end

    # "30" or "2.5": a number of seconds as a command line or a manifest writes it.
    def seconds(value)
      value == value.to_i ? value.to_i.to_s : value.to_s
    end
  end
end
