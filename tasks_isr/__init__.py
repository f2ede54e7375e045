"""ISR task plugin: indoor-scene perception from top-view renderings (docs/tasks/isr.md)."""
