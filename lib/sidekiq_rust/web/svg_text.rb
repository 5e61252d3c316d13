# frozen_string_literal: true

require "cgi"

module SidekiqRust
  module Web
    # The text inside the charts' SVG (Chart, SmallChart): megabytes, a UTC clock, escaped titles.
    module SvgText
      def mb(bytes)
        Units.mb(bytes, none: "-")
      end

      def clock(at)
        Time.at(at).utc.strftime("%H:%M:%S")
      end

      def esc(text)
        CGI.escapeHTML(text.to_s)
      end
    end
  end
end
