"""The outside world of Leadwire, for tests, the demo (scripts/demo.py), the benchmark (bench/) and
the fault run (faults/): one of each, all real.

  buyer.py      FakeBuyer: an HTTP buyer endpoint that records requests and answers as told
  smtp.py       SmtpSink: an SMTP server that records every email
  processes.py  Processes: services as `faststream run` child processes; service_env(settings)
  broker.py     publish() as a lead source would; wait_for_consumers()
  catalog.py    apply_catalog_text(): a catalog from YAML text
"""
