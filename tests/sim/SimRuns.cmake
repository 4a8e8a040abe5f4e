# SimRuns.cmake: ctest entries of a deterministic simulator, shared by tests/sim (raft-sim) and
# tests/sim/gossip (gossip-sim).
#
# cairn_sim_runs(<binary> <runs> <extra runs> <timeout>): each of <runs> is one string
# "<name>|<seeds>|<first seed>|<more arguments>", registered as the ctest entry <binary>-<name>
# running
#     <binary> --seeds <seeds * CAIRN_SIM_SCALE> --first-seed <first seed> <more arguments>
# and each of <extra runs> "<name>|<arguments>" as <binary>-<name> running <binary> <arguments>.
# Both are lists passed by value ("${RUNS}"). Label sim.

# cairn_scale_seeds(<out> <count>): count * CAIRN_SIM_SCALE, rounded down, at least 1. The scale
# may be a decimal ("0.25"); CMake's math() is integer only, so it is read as a fraction.
function(cairn_scale_seeds out count)
	set(number_re "^([0-9]*)(\\.([0-9]*))?$")
	if(CAIRN_SIM_SCALE MATCHES "^\\.?$" OR NOT CAIRN_SIM_SCALE MATCHES "${number_re}")
		message(FATAL_ERROR "CAIRN_SIM_SCALE must be a non-negative number, not '${CAIRN_SIM_SCALE}'")
	endif()
	string(REGEX MATCH "${number_re}" unused "${CAIRN_SIM_SCALE}")
	set(whole "${CMAKE_MATCH_1}")
	set(frac "${CMAKE_MATCH_3}")
	string(LENGTH "${frac}" digits)
	string(REPEAT "0" ${digits} zeros)
	set(den "1${zeros}")
	# Leading zeros ("05") stripped, empty parts read as 0, for math().
	string(REGEX REPLACE "^0+" "" whole "${whole}")
	string(REGEX REPLACE "^0+" "" frac "${frac}")
	if(whole STREQUAL "")
		set(whole 0)
	endif()
	if(frac STREQUAL "")
		set(frac 0)
	endif()
	math(EXPR n "${count} * (${whole} * ${den} + ${frac}) / ${den}")
	if(n LESS 1)
		set(n 1)
	endif()
	set(${out} ${n} PARENT_SCOPE)
endfunction()

function(cairn_sim_runs binary runs extra timeout)
	set(total 0)
	foreach(run ${runs})
		string(REPLACE "|" ";" fields "${run}")
		list(LENGTH fields nfields)
		if(NOT nfields EQUAL 4)
			message(FATAL_ERROR "${binary} run '${run}': want name|seeds|first|arguments")
		endif()
		list(GET fields 0 name)
		list(GET fields 1 seeds)
		list(GET fields 2 first)
		list(GET fields 3 more)
		separate_arguments(more UNIX_COMMAND "${more}")
		cairn_scale_seeds(seeds ${seeds})
		math(EXPR total "${total} + ${seeds}")
		add_test(NAME ${binary}-${name}
			COMMAND ${binary} --seeds ${seeds} --first-seed ${first} ${more})
		cairn_test_properties(${binary}-${name} LABEL sim TIMEOUT ${timeout})
	endforeach()
	foreach(run ${extra})
		string(REPLACE "|" ";" fields "${run}")
		list(GET fields 0 name)
		list(GET fields 1 more)
		separate_arguments(more UNIX_COMMAND "${more}")
		add_test(NAME ${binary}-${name} COMMAND ${binary} ${more})
		cairn_test_properties(${binary}-${name} LABEL sim TIMEOUT ${timeout})
	endforeach()
	message(STATUS "${binary}: ${total} seeds in ctest (CAIRN_SIM_SCALE ${CAIRN_SIM_SCALE})")
endfunction()
