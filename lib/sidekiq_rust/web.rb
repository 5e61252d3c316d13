# frozen_string_literal: true

require "sidekiq/web"
require_relative "../sidekiq_rust"
require_relative "web/page"

module SidekiqRust
  # The "Memory" tab of Sidekiq's Web UI: `require "sidekiq_rust/web"` after `require "sidekiq/web"` (in a Rails
  # app: config/routes.rb, where Sidekiq::Web is mounted). It reads only Redis (what the guards write through
  # SidekiqRust::History), serves no JavaScript, and uses no inline style or script: Sidekiq 8's strict
  # Content-Security-Policy lets it through.
  module Web
    ROOT = File.expand_path("web", __dir__)
    VIEW = File.join(ROOT, "views", "memory.erb")
    CSS = File.join(ROOT, "assets", "memory.css")
    TAB = "Memory"
    INDEX = "memory"

    # Sidekiq calls this with its application class: adds the tab's page and its stylesheet.
    def self.registered(app)
      view = File.read(VIEW)
      css = File.read(CSS)
      app.get "/memory" do
        @memory_page = SidekiqRust::Web::Page.new(page: request.params["page"], process: request.params["process"],
                                                 events: request.params["events"], scale: request.params["scale"])
        erb(view)
      end
      app.get "/memory/memory.css" do
        [200, { "content-type" => "text/css; charset=utf-8", "cache-control" => "private, max-age=3600" }, [css]]
      end
    end

    # Registers the tab with the running Sidekiq's own API (once).
    def self.register
      return if @registered

      @registered = true
      version = Gem::Version.new(Sidekiq::VERSION)
      if version >= Gem::Version.new("8.0")
        Sidekiq::Web.configure do |config|
          config.register(self, name: "sidekiq_rust", tab: TAB, index: INDEX, root_dir: ROOT)
        end
      elsif version >= Gem::Version.new("7.3")
        Sidekiq::Web.register(self, name: "sidekiq_rust", tab: TAB, index: INDEX, root_dir: ROOT)
      else
        Sidekiq::Web.register(self)
        Sidekiq::Web.tabs[TAB] = INDEX
        Sidekiq::Web.locales << File.join(ROOT, "locales")
      end
    end
  end
end

SidekiqRust::Web.register
