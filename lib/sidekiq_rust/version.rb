# frozen_string_literal: true

module SidekiqRust
  VERSION = "0.1.0"
end
