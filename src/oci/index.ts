// The OCI runtime-spec module: types, validation, defaults, state, annotations and features. No I/O.
export * from "./annotations";
export * from "./defaults";
export * from "./features";
export * from "./id";
export * from "./names";
export * from "./spec";
export * from "./state";
export * from "./validate";
