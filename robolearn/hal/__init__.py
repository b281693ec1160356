"""Hardware abstraction: small Robot / Camera / Teleop protocols, drivers behind them, and the safety layer."""
