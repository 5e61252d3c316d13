# frozen_string_literal: true

require "timeout"

# Ends a child process this suite started: TERM, then KILL if it is still there after `timeout` seconds; reaps it.
module Terminate
  def self.child(pid, timeout: 10)
    Process.kill(:TERM, pid)
    Timeout.timeout(timeout) { Process.wait(pid) }
  rescue Errno::ESRCH, Errno::ECHILD
    nil
  rescue Timeout::Error
    Process.kill(:KILL, pid)
    Process.wait(pid)
  end
end
