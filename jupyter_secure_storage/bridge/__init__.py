"""The paired-device bridge: Noise, relay, host and device sides."""
