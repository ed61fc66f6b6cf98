"""What the app tells the tools that watch it: OpenTelemetry traces (docs/tracing.md)."""
