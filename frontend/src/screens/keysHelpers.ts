import { describeStep } from "./MasterKeyWizard";

export { MODE_LABEL } from "./Dashboard";

export function describeStepList(progress: unknown): string[] {
  return Array.isArray(progress) ? progress.map(describeStep) : [];
}
