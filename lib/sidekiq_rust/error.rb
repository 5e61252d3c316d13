# frozen_string_literal: true

module SidekiqRust
  # Every error sidekiq_rust raises is a SidekiqRust::Error; the native extension raises these classes too.
  class Error < StandardError; end

  # The process named by a PID does not exist (or exited while it was being read).
  class NoSuchProcess < Error; end

  # The OS refused to let this process read another one's /proc files.
  class PermissionDenied < Error; end

  # The platform or allocator does not offer what was asked (no /proc, an unknown malloc, ...).
  class NotSupported < Error; end

  # An argument of the wrong type or range.
  class InvalidArgument < Error; end

  # A configuration value that cannot be used; raised at boot, naming the key and the accepted form.
  class ConfigurationError < Error; end
end
