"""The offline year study (``printnode simulate``): the planner and its peers on a year of TMY weather."""
