# frozen_string_literal: true

module SidekiqRust
  module Doctor
    # The `db pool` check: the ActiveRecord pool against Sidekiq's concurrency (jobs wait for
    # connections when it is smaller).
    module DbPoolCheck
      module_function

      def check(concurrency)
        unless defined?(::ActiveRecord::Base)
          return Check.new(name: "db pool", status: :skip,
                           saw: "ActiveRecord is not loaded (run with --require ./config/environment)")
        end

        pool = ::ActiveRecord::Base.connection_pool.size
        if concurrency.nil?
          return Check.new(name: "db pool", status: :warn,
                           saw: "ActiveRecord pool #{pool}, Sidekiq concurrency unknown",
                           todo: "give --concurrency N (Sidekiq's -c) to compare them")
        end
        if pool >= concurrency
          Check.new(name: "db pool", status: :pass,
                    saw: "ActiveRecord pool #{pool} >= Sidekiq concurrency #{concurrency}")
        else
          Check.new(name: "db pool", status: :fail,
                    saw: "ActiveRecord pool #{pool} < Sidekiq concurrency #{concurrency}",
                    todo: "jobs will wait for connections and fail with \"could not obtain a connection from the " \
                          "pool within 5.000 seconds\": set pool to at least #{concurrency} in config/database.yml, " \
                          "plus one for every thread your jobs start themselves (they need connections too)")
        end
      rescue StandardError => e
        Check.new(name: "db pool", status: :warn, saw: "could not read the ActiveRecord pool: #{e.message}")
      end
    end
  end
end
