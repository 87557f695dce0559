"""Measurement: timers, monitors (memory, NVML energy and state, RAPL), NVML access, device peaks, the environment record, compile counting."""
