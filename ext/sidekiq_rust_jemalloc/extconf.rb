# frozen_string_literal: true

# Builds the preloadable jemalloc (a plain cdylib, not a Ruby extension: it has no Init_ function and Ruby never
# requires it) into lib/sidekiq_rust/, beside the extension. `sidekiq_rust exec` puts it in LD_PRELOAD.
require "mkmf"
require "rb_sys/mkmf"

create_rust_makefile("sidekiq_rust/sidekiq_rust_jemalloc")
