/**
 * Types and annotation names shared by bbsync's Backstage packages.
 *
 * @packageDocumentation
 */
export * from './annotations';
export * from './types';
