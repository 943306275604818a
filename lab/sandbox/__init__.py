"""The sandbox side: `lab case` runs one attempt of one case. It never imports lab.host."""
