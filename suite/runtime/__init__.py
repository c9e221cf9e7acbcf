"""
Kept only so that units written for earlier versions, which name
`--logger=suite.runtime.journal.observer`, keep working; the observers live
in L{suite.journal}.
"""
