# frozen_string_literal: true

require "json"
require "open3"

# Parses Prometheus text with a real parser: Python's prometheus_client, Debian's python3-prometheus-client
# (bin/setup installs it) under Debian's python3, whatever other python3 comes first on PATH.
module Prometheus
  PARSER = <<~PY
    import json, sys
    from prometheus_client.parser import text_string_to_metric_families
    out = []
    for family in text_string_to_metric_families(sys.stdin.read()):
        out.append({"name": family.name, "type": family.type, "help": family.documentation,
                    "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples]})
    print(json.dumps(out))
  PY

  # [{"name", "type", "help", "samples" => [{"name", "labels", "value"}]}]; raises with the parser's error.
  def self.parse(text)
    out, err, status = Open3.capture3("/usr/bin/python3", "-c", PARSER, stdin_data: text)
    raise "prometheus_client could not parse the metrics: #{err}" unless status.success?

    JSON.parse(out)
  end

  # The samples named `name` (with a counter's _total suffix as written).
  def self.samples(families, name)
    families.flat_map { |f| f["samples"] }.select { |s| s["name"] == name }
  end
end
