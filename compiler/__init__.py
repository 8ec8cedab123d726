"""codesign compiler: frontends, dataflow dialect, passes, numerics, scheduling onto hw models."""
