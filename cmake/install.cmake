# Installation: `cmake --install build --prefix P` puts
#   P/include/nuri/*.hpp                       the public headers only (and the generated version.hpp)
#   P/lib/libnuri.so*, P/lib/libnuri.a         shared and static library
#   P/bin/nuri                                 the command line
#   P/lib/cmake/nuri/                          find_package(nuri CONFIG): nuri::nuri (shared),
#                                              nuri::nuri_static; MPI and OpenMP found transitively
#   P/lib/pkgconfig/nuri.pc                    pkg-config --cflags --libs nuri
include(CMakePackageConfigHelpers)

install(TARGETS nuri nuri_shared EXPORT nuriTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS nuri_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/nuri DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.hpp")
install(FILES ${PROJECT_BINARY_DIR}/include/nuri/version.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/nuri)

set(NURI_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/nuri)
install(EXPORT nuriTargets NAMESPACE nuri:: DESTINATION ${NURI_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/nuriConfig.cmake.in
  ${PROJECT_BINARY_DIR}/nuriConfig.cmake INSTALL_DESTINATION ${NURI_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/nuriConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/nuriConfig.cmake ${PROJECT_BINARY_DIR}/nuriConfigVersion.cmake
  DESTINATION ${NURI_CMAKE_DIR})

# pkg-config: the shared library, its MPI and OpenMP flags (a static link adds the private ones).
set(NURI_PC_MPI_CFLAGS "")
foreach(dir ${MPI_CXX_INCLUDE_DIRS})
  string(APPEND NURI_PC_MPI_CFLAGS " -I${dir}")
endforeach()
string(REPLACE ";" " " NURI_PC_MPI_LIBS "${MPI_CXX_LIBRARIES}")
string(REPLACE ";" " " NURI_PC_OPENMP_FLAGS "${OpenMP_CXX_FLAGS}")
# From <prefix>/<libdir>/pkgconfig back to <prefix>: one ".." per component of libdir, plus one.
file(RELATIVE_PATH NURI_PC_UP ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
configure_file(${PROJECT_SOURCE_DIR}/cmake/nuri.pc.in ${PROJECT_BINARY_DIR}/nuri.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/nuri.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
