# frozen_string_literal: true

# Ruby code, prepended to a child's program, that calls jemalloc's mallctl through Fiddle: the child finds it in
# the global scope only when a jemalloc is loaded (LD_PRELOAD).
module JemallocProbe
  CODE = <<~'RUBY'
    require "fiddle"

    def mallctl_function
      Fiddle::Function.new(Fiddle::Handle::DEFAULT["mallctl"], [Fiddle::TYPE_VOIDP] * 4 + [Fiddle::TYPE_SIZE_T],
                           Fiddle::TYPE_INT)
    end

    # Reads a value of `size` bytes and unpacks it with `format` ("J" size_t, "C" bool, "L" unsigned, "q" ssize_t).
    def mallctl_read(name, format, size)
      value = Fiddle::Pointer.malloc(size, Fiddle::RUBY_FREE)
      length = Fiddle::Pointer.malloc(Fiddle::SIZEOF_SIZE_T, Fiddle::RUBY_FREE)
      length[0, Fiddle::SIZEOF_SIZE_T] = [size].pack("J")
      status = mallctl_function.call(name, value, length, nil, 0)
      raise "mallctl(#{name.inspect}) returned #{status}" unless status.zero?

      value[0, size].unpack1(format)
    end

    def mallctl_string(name)
      Fiddle::Pointer.new(mallctl_read(name, "J", Fiddle::SIZEOF_VOIDP)).to_s
    end

    # Statistics are a snapshot taken at the last write to "epoch".
    def mallctl_refresh
      epoch = Fiddle::Pointer.malloc(8, Fiddle::RUBY_FREE)
      epoch[0, 8] = [1].pack("Q")
      status = mallctl_function.call("epoch", nil, nil, epoch, 8)
      raise "mallctl(\"epoch\") returned #{status}" unless status.zero?
    end
  RUBY

  # A child Ruby running `code` after the probe, with the given LD_PRELOAD (nil: none); returns [out, err, status].
  def run_probe(code, preload:, env: {})
    run_ruby("#{CODE}\n#{code}", env: { "LD_PRELOAD" => preload }.merge(env))
  end

  def probe_output(code, preload:, env: {})
    out, err, status = run_probe(code, preload: preload, env: env)
    raise "child Ruby failed (#{status.inspect}):\n#{err}\n#{out}" unless status.success?

    out
  end
end

RSpec.configure { |config| config.include JemallocProbe }
