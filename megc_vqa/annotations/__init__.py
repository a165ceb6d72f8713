"""Dataset annotation files (CASME II, SAMM, SMIC, CAS(ME)^3, CAS(ME)^2, SAMM-LV) <-> records."""
