// The organization and its members, loaded once per sign-in and shared by
// the pages (members only for the roles that may read them).

import { createContext, useCallback, useContext, useEffect, useState, type ReactNode } from "react";
import { activity, can, listAllMembers, orgs, type SignedIn } from "./api";
import { colorFor, PALETTE } from "./components/ChartView";
import type { Member, Organization } from "./gen/trackhrs/org/v1/org_pb";
import { safeZone } from "./time";

export interface OrgData {
  session: SignedIn;
  org: Organization | undefined;
  orgError: unknown;
  /** The org's time zone (UTC until the organization is loaded). */
  timeZone: string;
  members: Member[];
  /** A member's name, else e-mail, else id ("You" for the signed-in user when unknown). */
  nameOf: (personId: string) => string;
  /** A category's colour, the same on every page (by its place in the org's rules). */
  categoryColor: (path: string) => string;
  /** Reload both, waiting for `minPosition` (from a command's answer). */
  reload: (minPosition?: bigint) => Promise<void>;
}

const Ctx = createContext<OrgData | null>(null);

export function useOrg(): OrgData {
  const value = useContext(Ctx);
  if (!value) throw new Error("useOrg outside OrgProvider");
  return value;
}

export function OrgProvider({ session, children }: { session: SignedIn; children: ReactNode }) {
  const [org, setOrg] = useState<Organization>();
  const [orgError, setOrgError] = useState<unknown>(null);
  const [members, setMembers] = useState<Member[]>([]);
  const [categories, setCategories] = useState<string[]>([]);
  const readMembers = can(session.role).readMembers;

  const reload = useCallback(
    async (minPosition?: bigint) => {
      const req = { orgId: session.orgId, minPosition: minPosition ?? 0n };
      try {
        const [o, m, r] = await Promise.all([
          orgs.getOrganization(req),
          readMembers ? listAllMembers(req.orgId, req.minPosition) : Promise.resolve(null),
          activity.getCategoryRules(req).catch(() => null),
        ]);
        setOrg(o);
        if (m) setMembers(m.members);
        if (r) setCategories(r.rules.map((rule) => rule.name.join(" > ")));
        setOrgError(null);
      } catch (err) {
        setOrgError(err);
      }
    },
    [session.orgId, readMembers],
  );

  useEffect(() => {
    void reload();
  }, [reload]);

  const nameOf = useCallback(
    (personId: string) => {
      const m = members.find((x) => x.personId === personId);
      if (m) return m.name || m.email || personId;
      return personId === session.personId ? `You (${personId})` : personId;
    },
    [members, session.personId],
  );

  const categoryColor = useCallback(
    (path: string) => {
      const i = categories.indexOf(path);
      return i >= 0 && path !== "Uncategorized" ? PALETTE[i % PALETTE.length]! : colorFor(path);
    },
    [categories],
  );

  const value: OrgData = {
    categoryColor,
    session,
    org,
    orgError,
    timeZone: safeZone(org?.settings?.timezone),
    members,
    nameOf,
    reload,
  };
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}
