# frozen_string_literal: true

require_relative "real_cgroup"

# For a group whose examples make real memory cgroups: each is skipped, saying why, where none can be made here, and
# the group an example keeps in @cgroup is removed after it, whatever happened.
RSpec.shared_context "real memory cgroup" do
  unavailable = RealCgroup.unavailable
  before { skip("no writable memory cgroup here: #{unavailable}") if unavailable }

  around do |example|
    example.run
  ensure
    @cgroup&.destroy
  end
end
