# Soak and benchmark smoke tests: the tools run end to end and print the JSON their readers rely
# on. The pass/fail of a soak is its exit status (0: every kernel resource came back to baseline);
# timings are printed, never asserted, because the machine is shared and noisy.
#
# One file, two uses:
#  - include()d from tests/CMakeLists.txt, it registers the ctest tests (when the tools are built);
#  - run as `cmake -DCOMMAND=... -DARGS=... -DKEYS=... -P soak_test.cmake` by those tests, it runs
#    the tool, fails unless it exits with EXPECT_EXIT (default 0), and checks that stdout is one
#    JSON object with every key of KEYS (dotted paths: "baseline.pidfds"), each a finite number
#    greater than zero for the keys in POSITIVE, each equal to what EXPECT says ("key=value ...":
#    the variant that ran is the one asked for), and each at least its bound for AT_LEAST
#    ("key=n ...": the work was done, not only configured).

if(CMAKE_SCRIPT_MODE_FILE)
  separate_arguments(args UNIX_COMMAND "${ARGS}")
  execute_process(COMMAND "${COMMAND}" ${args}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT DEFINED EXPECT_EXIT)
    set(EXPECT_EXIT 0)
  endif()
  if(NOT rc STREQUAL "${EXPECT_EXIT}")
    message(FATAL_ERROR "${COMMAND} ${ARGS} exited with ${rc}, expected ${EXPECT_EXIT}\n"
                        "stdout:\n${out}\nstderr:\n${err}")
  endif()
  string(JSON type ERROR_VARIABLE json_error TYPE "${out}")
  if(json_error OR NOT type STREQUAL "OBJECT")
    message(FATAL_ERROR "stdout is not one JSON object (${json_error}):\n${out}")
  endif()
  # json_get(VAR KEY): the value at a dotted path, or a fatal error naming the key.
  function(json_get var key)
    string(REPLACE "." ";" path "${key}")
    string(JSON value ERROR_VARIABLE json_error GET "${out}" ${path})
    if(json_error)
      message(FATAL_ERROR "JSON key '${key}' missing: ${json_error}\n${out}")
    endif()
    set(${var} "${value}" PARENT_SCOPE)
  endfunction()
  separate_arguments(keys UNIX_COMMAND "${KEYS}")
  foreach(key IN LISTS keys)
    json_get(value ${key})
  endforeach()
  separate_arguments(positive UNIX_COMMAND "${POSITIVE}")
  foreach(key IN LISTS positive)
    json_get(value ${key})
    if(NOT value MATCHES "^[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$" OR NOT value GREATER 0)
      message(FATAL_ERROR "JSON key '${key}' is ${value}, not a finite number above 0\n${out}")
    endif()
  endforeach()
  # "key=value ..." pairs: each key's JSON value must be `relation` to the value (STREQUAL for
  # EXPECT, GREATER_EQUAL for AT_LEAST).
  function(check_pairs pairs relation says)
    separate_arguments(pairs UNIX_COMMAND "${pairs}")
    foreach(pair IN LISTS pairs)
      string(REGEX MATCH "^([^=]+)=(.*)$" _ "${pair}")
      set(key ${CMAKE_MATCH_1})
      set(want ${CMAKE_MATCH_2})
      json_get(value ${key})
      if(NOT value ${relation} want)
        message(FATAL_ERROR "JSON key '${key}' is '${value}', expected ${says} '${want}'")
      endif()
    endforeach()
  endfunction()
  check_pairs("${EXPECT}" STREQUAL "")
  check_pairs("${AT_LEAST}" GREATER_EQUAL "at least")
  message(STATUS "${out}")
  return()
endif()

set(_tcr_counts fds pidfds maps threads rss_kb)
set(_tcr_soak_keys threads us_per_thread_first us_per_thread_last ratio handle_mode seconds)
foreach(which baseline final)
  foreach(count IN LISTS _tcr_counts)
    list(APPEND _tcr_soak_keys ${which}.${count})
  endforeach()
endforeach()
list(JOIN _tcr_soak_keys " " _tcr_soak_keys)

# name, thread count, mode, handle mode (auto: whichever the kernel allows, not checked), gc,
# then further tcr-soak arguments. The JSON must say that this variant ran (mode and gc as each
# thread saw its own Tcr, handle_mode as the manager chose) and that every thread ran and was
# reaped (both count the warm-up spawn too), and the timings must be finite and positive.
function(_tcr_add_soak_test name threads mode handle_mode gc)
  list(JOIN ARGN " " extra)
  set(expect "threads=${threads} mode=${mode} gc=${gc} ok=ON")
  if(NOT gc)
    string(APPEND expect " runs_gc_registered=0")
  endif()
  if(NOT handle_mode STREQUAL "auto")
    string(APPEND expect " handle_mode=${handle_mode}")
  endif()
  add_test(NAME ${name}
           COMMAND ${CMAKE_COMMAND} -DCOMMAND=$<TARGET_FILE:tcr-soak>
                   "-DARGS=--threads ${threads} --json ${extra}" "-DKEYS=${_tcr_soak_keys}"
                   "-DEXPECT=${expect}"
                   "-DAT_LEAST=reaped=${threads} runs=${threads}"
                   "-DPOSITIVE=us_per_thread_first us_per_thread_last ratio seconds"
                   -P ${CMAKE_CURRENT_FUNCTION_LIST_FILE})
  set_tests_properties(${name} PROPERTIES LABELS soak TIMEOUT 180)
endfunction()

if(TARGET tcr-soak)
  # The foo loop, detached + semaphore, the way CCL's process-run-function runs it.
  _tcr_add_soak_test(Soak.DetachedThreadsReturnEveryResource 20000 detached auto ON)
  _tcr_add_soak_test(Soak.JoinedThreadsReturnEveryResource 5000 joinable auto ON --joinable)
  # The fallback for kernels before 6.9: no pidfd per thread, tgkill under the registry lock.
  _tcr_add_soak_test(Soak.TgkillModeReturnsEveryResource 5000 detached tgkill ON
                     --handle-mode tgkill)
  _tcr_add_soak_test(Soak.WithoutGcReturnsEveryResource 5000 detached auto OFF --no-gc)
  # The soak must catch the seeds' kind of bug: one fd leaked per thread exits 1, still with JSON.
  add_test(NAME Soak.ReportsAFdLeakedPerThread
           COMMAND ${CMAKE_COMMAND} -DCOMMAND=$<TARGET_FILE:tcr-soak>
                   "-DARGS=--threads 200 --json --inject-leak" "-DKEYS=${_tcr_soak_keys} grew.0"
                   -DEXPECT_EXIT=1 -P ${CMAKE_CURRENT_LIST_FILE})
  set_tests_properties(Soak.ReportsAFdLeakedPerThread PROPERTIES LABELS soak TIMEOUT 60)
endif()

if(TARGET tcr-bench)
  # Each is small enough to take a second or two: it checks that the subcommand runs and reports
  # every figure its readers use, each a finite number above zero (the keys but "bench").
  function(tcr_bench_smoke_test name timeout args keys)
    string(REGEX REPLACE "(^| )bench( |$)" " " figures "${keys}")
    string(REGEX MATCH "^[^ ]+" subcommand "${args}")
    add_test(NAME ${name}
             COMMAND ${CMAKE_COMMAND} -DCOMMAND=$<TARGET_FILE:tcr-bench> "-DARGS=${args}"
                     "-DKEYS=${keys}" "-DPOSITIVE=${figures}" "-DEXPECT=bench=${subcommand}"
                     -P ${CMAKE_CURRENT_FUNCTION_LIST_FILE})
    set_tests_properties(${name} PROPERTIES LABELS bench TIMEOUT ${timeout})
  endfunction()
  tcr_bench_smoke_test(Bench.SpawnReportsEveryVariant 180
    "spawn --threads 200 --rounds 3 --history-window 500 --history-after 2000 --fd-high-water 2000 --json"
    "bench variants.pthread.us_per_thread variants.pthread_detach.us_per_thread variants.gc_pthread.us_per_thread variants.tcr_join.us_per_thread variants.tcr_detach.us_per_thread variants.tcr_join.ratio_to_pthread variants.tcr_detach.ratio_to_baseline history.ratio fd_high_water.ratio_after seconds")
  tcr_bench_smoke_test(Bench.HandlesReportsBothTables 60
    "handles --fds 2000 --calls 2000 --rounds 3 --json"
    "bench high_water_fds ns_small_table ns_after_high_water ratio")
  tcr_bench_smoke_test(Bench.StopWorldReportsBothVariants 60
    "stop-world --threads 1 8 --stops 20 --json"
    "bench rows.0.threads rows.0.tcr_us rows.0.boehm_us rows.1.ratio")
  tcr_bench_smoke_test(Bench.TrapsReportsEveryMode 60
    "traps --pages 256 --rounds 3 --json"
    "bench pages modes.0.first_write_ns modes.1.first_write_ns modes.1.collect_us_per_1000_pages modes.1.vs_signal")
endif()
