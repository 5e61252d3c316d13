# frozen_string_literal: true

module SidekiqRust
  module Doctor
    # One check's answer: its name, :pass, :warn, :fail, :info (reported, not judged) or :skip (does not apply
    # here), what it saw and what to do.
    Check = Struct.new(:name, :status, :saw, :todo, keyword_init: true) do
      def line
        text = format("%-4<status>s %-13<name>s %<saw>s", status: status.to_s.upcase, name: name, saw: saw)
        todo ? "#{text}\n                   #{todo}" : text
      end

      def problem?
        status == :fail
      end
    end
  end
end
